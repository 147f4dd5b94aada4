"""The registry contract: a method or metric registered from outside the package (here, this test module) is
accepted by the CLI, ``erase``, the experiments and ``evaluate`` with no other edit: its config section, its
overrides and its results come from its registry entry alone."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file

from prunefit.cli import main
from prunefit.config.load import load_config
from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import inline_prompts
from prunefit.errors import ConfigError
from prunefit.evaluation.registry import MetricResult, register_metric, unregister_metric
from prunefit.generation.sample import generate_run
from prunefit.removal.esd.method import ESDConfig
from prunefit.removal.esd.method import build_phase as esd_build_phase
from prunefit.removal.registry import EditResult, MethodEntry, register_method, unregister_method


@dataclass
class ScaleConfig:
    concepts: list[str] = field(default_factory=list)
    factor: float = 0.5

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ConfigError(f"dummy_scale.factor must be > 0, got {self.factor}")


def scale_apply(ctx, cfg: ScaleConfig) -> EditResult:
    """Scale the UNet's output convolution (a stand-in edit whose effect is exact to check)."""
    with torch.no_grad():
        ctx.unet.conv_out.weight.mul_(cfg.factor)
    return EditResult({"scaled": "conv_out.weight", "factor": cfg.factor},
                      {"dummy_factors": {"conv_out": torch.tensor([cfg.factor])}})


@dataclass
class ShoutConfig(ESDConfig):
    """A train method that is ESD under another name (so bilevel must take its section from the registry)."""


@dataclass
class CountConfig:
    weight: float = 1.0


def count_metric(ctx, cfg: CountConfig) -> MetricResult:
    return MetricResult({"weighted_rows": cfg.weight * len(ctx.rows)}, {"weight": cfg.weight})


@pytest.fixture
def plugins():
    register_method(MethodEntry("dummy_scale", "edit", ScaleConfig, "scales conv_out", "this test", apply=scale_apply))
    register_method(MethodEntry("dummy_esd", "train", ShoutConfig, "ESD renamed", "this test",
                                build_phase=esd_build_phase))
    register_metric("dummy_count", count_metric, "images", "rows x weight", CountConfig)
    try:
        yield
    finally:
        unregister_method("dummy_scale")
        unregister_method("dummy_esd")
        unregister_metric("dummy_count")


def test_cli_erase_runs_a_method_registered_outside_the_package(plugins, tiny, tmp_path, capsys):
    from prunefit.models.components import load_components

    out = tmp_path / "erase"
    code = main(["erase", "model=tiny", "removal.method=dummy_scale", "dummy_scale.factor=0.25",
                 "removal.concepts=[Claude Dots]", f"output_dir={out}"])
    assert code == 0
    summary = json.loads((out / "erase_summary.json").read_text())
    assert summary["method"] == "dummy_scale" and summary["factor"] == 0.25 and summary["concepts"] == ["Claude Dots"]
    assert load_file(str(out / "dummy_factors.safetensors"))["conv_out"].item() == 0.25
    edited = load_components(str(out / "pipeline")).unet.conv_out.weight
    assert torch.allclose(edited, 0.25 * tiny.unet.conv_out.weight)
    assert main(["list", "methods"]) == 0 and "dummy_scale" in capsys.readouterr().out


def test_the_section_validates_and_bad_keys_teach(plugins, tmp_path):
    from prunefit.removal.config import EraseConfig

    with pytest.raises(ConfigError, match="dummy_scale.factor must be > 0"):
        load_config(EraseConfig, [], ["removal.method=dummy_scale", "dummy_scale.factor=-1"])
    with pytest.raises(ConfigError):
        load_config(EraseConfig, [], ["dummy_scale.no_such_key=1"])
    cfg = load_config(EraseConfig, [], ["removal.method=dummy_scale", "removal.concepts=[a]"])
    assert cfg.method_config() == ScaleConfig(concepts=["a"], factor=0.5)


def test_the_sections_leave_with_the_registration(tmp_path):
    from prunefit.removal.config import EraseConfig

    with pytest.raises(ConfigError):
        load_config(EraseConfig, [], ["dummy_scale.factor=2"])
    with pytest.raises(ConfigError, match="unknown removal method 'dummy_scale'"):
        load_config(EraseConfig, [], ["removal.method=dummy_scale", "removal.concepts=[a]"]).method_config()


def test_experiments_accept_the_registered_method(plugins, tiny, tmp_path):
    from prunefit.experiments.common.protocol import EraseKnobs
    from prunefit.experiments.common.stages import run_erase
    from prunefit.experiments.erasure.config import ErasureConfig, variant_method

    assert variant_method("dummy_scale") == ("dummy_scale", None)
    ErasureConfig(variants=["esd-u", "dummy_scale"])  # validates against the registry
    with pytest.raises(ConfigError, match="unknown erasure variants"):
        ErasureConfig(variants=["no_such_method"])
    path = run_erase("dummy_scale", "Claude Dots", "tiny", None, tmp_path / "cell", EraseKnobs(1, 1e-4, 2, 1, 1))
    assert (path / "model_index.json").is_file()
    assert json.loads((tmp_path / "cell" / "erase_summary.json").read_text())["method"] == "dummy_scale"


def test_bilevel_takes_its_upper_sections_from_the_registry(plugins):
    from prunefit.removal.bilevel.config import BilevelConfig

    cfg = load_config(BilevelConfig, [], ["upper_method=dummy_esd", "dummy_esd.eta=0.5", "concepts=[skull]",
                                          "preset=paper"])
    upper = cfg.upper_config()
    assert isinstance(upper, ShoutConfig) and upper.eta == 0.5 and upper.concepts == ["skull"]
    with pytest.raises(ConfigError, match="dummy_esd.lr=0.0003 is not read by bilevel"):  # bilevel sets the lr
        load_config(BilevelConfig, [], ["upper_method=dummy_esd", "dummy_esd.lr=3e-4", "concepts=[skull]"])
    with pytest.raises(ConfigError, match="must be a train method"):
        load_config(BilevelConfig, [], ["upper_method=dummy_scale"])  # an edit method cannot be the upper level


def test_evaluate_runs_a_metric_registered_outside_the_package(plugins, tiny, tmp_path):
    run = tmp_path / "run"
    generate_run(tiny, inline_prompts(["a prompt", "another prompt", "a third"]), SamplerConfig(steps=2), 0, run)
    assert main(["evaluate", str(run), "metrics=[dummy_count]", "dummy_count.weight=2.5"]) == 0
    doc = json.loads((run / "results.json").read_text())
    assert doc["metrics"]["dummy_count"]["values"] == {"weighted_rows": 7.5}


def test_metrics_sharing_a_section_share_one_config_class():
    from prunefit.evaluation.registry import metric_sections
    from prunefit.recipes.evaluate import EvaluateConfig

    sections = dict(metric_sections())
    assert sections["cost"].__name__ == "CostConfig" and "macs" not in sections and "latency" not in sections
    names = {f.name for f in dataclasses.fields(EvaluateConfig.registry_schema())}
    assert set(sections) <= names
