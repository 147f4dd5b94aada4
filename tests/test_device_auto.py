"""``device: auto`` and ``mixed_precision: auto``: what they resolve to, on this CPU machine and on a faked GPU one."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from prunefit.errors import ConfigError
from prunefit.utils.device import resolve_device, resolve_mixed_precision


def _fake_gpus(monkeypatch, count: int, bf16: bool = True, current: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not torch.cuda.is_available()
    assert resolve_device("auto") == "cpu"
    assert resolve_mixed_precision("auto", "cpu") == "no"


def test_auto_takes_the_launchers_rank_on_a_gpu_machine(monkeypatch):
    _fake_gpus(monkeypatch, 8, current=0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resolve_device("auto") == "cuda:5"
    assert resolve_device("cuda") == "cuda:5"  # bare cuda under a launcher is the rank's GPU too
    assert resolve_device("cuda:1") == "cuda:1"  # an explicit index is kept (the runtime refuses it under a launch)
    assert resolve_mixed_precision("auto", "cuda:5") == "bf16"


def test_auto_precision_is_no_on_a_gpu_without_bf16(monkeypatch):
    _fake_gpus(monkeypatch, 1, bf16=False)
    assert resolve_mixed_precision("auto", "cuda:0") == "no"
    assert resolve_mixed_precision("fp16", "cuda:0") == "fp16"


@pytest.mark.parametrize("spec, message", [
    ("cuda", "device=cuda but no CUDA GPU is visible"),
    ("cuda:3", "device=cuda:3 but no CUDA GPU is visible"),
    ("gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_a_device_this_machine_lacks_is_refused_in_one_line(spec, message):
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_gpu_index_past_the_last_one_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    with pytest.raises(ConfigError, match=r"device=cuda:2 but this machine has 2 visible GPU\(s\)"):
        resolve_device("cuda:2")


def test_fp16_on_a_cpu_is_refused_naming_bf16():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device.*bf16"):
        resolve_mixed_precision("fp16", "cpu")


def _command_configs() -> list[type]:
    from prunefit.config.schema import FinetuneConfig, GenerateConfig, PruneConfig
    from prunefit.experiments.distillation.config import DistillationConfig
    from prunefit.experiments.erasure.config import ErasureConfig
    from prunefit.experiments.figures.config import FiguresConfig
    from prunefit.experiments.table3.config import ExperimentConfig
    from prunefit.recipes.attack import AttackConfig
    from prunefit.recipes.cache import CacheConfig
    from prunefit.recipes.evaluate import EvaluateConfig
    from prunefit.removal.bilevel.config import BilevelConfig
    from prunefit.removal.config import EraseConfig

    return [GenerateConfig, PruneConfig, FinetuneConfig, EraseConfig, BilevelConfig, CacheConfig, EvaluateConfig,
            AttackConfig, ExperimentConfig, ErasureConfig, DistillationConfig, FiguresConfig]


@pytest.mark.parametrize("schema", _command_configs(), ids=lambda c: c.__name__)
def test_every_command_defaults_to_auto_and_holds_the_resolved_device(schema, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    default = {f.name: f.default for f in dataclasses.fields(schema)}["device"]
    assert default == "auto"
    kwargs = {}
    if schema.__name__ == "EvaluateConfig":
        kwargs = {"run_dir": "x"}
    if schema.__name__ == "FiguresConfig":
        from prunefit.experiments.figures.config import FigureModel

        kwargs = {"models": [FigureModel("T", "toyworld")], "prompt_file": "p.csv"}
    cfg = schema(**kwargs)
    assert cfg.device == "cpu"
    if hasattr(cfg, "train"):
        assert cfg.train.mixed_precision == "no"


def test_resolved_config_records_what_auto_became(tmp_path):
    from prunefit.config.load import load_config, save_resolved_config
    from prunefit.config.schema import FinetuneConfig

    cfg = load_config(FinetuneConfig, [], ["device=auto"])
    save_resolved_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "resolved_config.yaml").read_text())
    assert saved["device"] == "cpu" and saved["train"]["mixed_precision"] == "no"


def test_the_cli_refuses_a_gpu_this_machine_lacks_before_loading_anything(tmp_path, capsys):
    from prunefit.cli import main

    out = tmp_path / "g"
    assert main(["generate", f"output_dir={out}", "device=cuda", "prompts=[a red circle]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU is visible" in err
    assert not out.exists()


def test_bilevel_paper_refuses_fp16_naming_bf16(monkeypatch):
    """The paper preset takes the upper gradient with autograd.grad inside its objective, out of the grad scaler's
    reach, so fp16 is refused there (official, whose phases each step through their own scaler, accepts it)."""
    from prunefit.config.schema import TrainConfig
    from prunefit.removal.bilevel.config import BilevelConfig

    _fake_gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match="preset=paper .* use train.mixed_precision=bf16"):
        BilevelConfig(preset="paper", concepts=["x"], train=TrainConfig(mixed_precision="fp16"))
    assert BilevelConfig(preset="official", concepts=["x"],
                         train=TrainConfig(mixed_precision="fp16")).train.mixed_precision == "fp16"


def _device_defaults() -> list[tuple[str, str, object]]:
    """(file, class, default) of every class field named ``device`` in src/, and of every public function's
    ``device`` keyword in the API, the experiments' helpers and the attack detectors."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "prunefit"
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if (isinstance(item, ast.AnnAssign) and getattr(item.target, "id", "") == "device"
                            and isinstance(item.value, ast.Constant)):
                        out.append((str(path.relative_to(root)), node.name, item.value.value))
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":  # a hand-written constructor
                        args = item.args
                        pairs = [*zip(args.args[::-1], args.defaults[::-1]), *zip(args.kwonlyargs, args.kw_defaults)]
                        out += [(str(path.relative_to(root)), node.name, d.value) for a, d in pairs
                                if a.arg == "device" and isinstance(d, ast.Constant)]
    return out


def test_no_config_or_context_defaults_to_the_cpu():
    """Every config, context, detector and encoder with a ``device`` field or constructor argument defaults to auto
    (our users run on GPUs)."""
    found = _device_defaults()
    assert len(found) >= 17  # the 12 command / experiment configs + the runtime contexts and the CLIP detector
    assert [f for f in found if f[2] != "auto"] == []


def test_contexts_resolve_auto_and_keep_a_torch_device(monkeypatch):
    from prunefit.evaluation.context import EvalContext
    from prunefit.utils.device import as_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert EvalContext("x", []).device == "cpu" and as_device(torch.device("meta")) == torch.device("meta")
    _fake_gpus(monkeypatch, 2)
    assert EvalContext("x", []).device == "cuda:0"
    import prunefit

    assert inspect_default(prunefit.load, "device") == "auto"


def inspect_default(fn, name: str):
    import inspect

    return inspect.signature(fn).parameters[name].default
