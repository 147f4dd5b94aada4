"""Every shipped config file loads and validates against its schema; the SD 2.1 configs hold the paper's settings."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from prunefit.config.load import load_config

ROOT = Path(__file__).resolve().parent.parent / "configs"
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name != "accelerate")
"""prunefit's command configs; configs/accelerate/ holds 🤗 Accelerate launch configs (tested below)."""


def _schema(name: str):
    from prunefit.cli import command_schema

    return command_schema(name)  # the CLI's own table: a config file names the command it configures


def _load(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# schema: "), f"{path} must start with '# schema: <name>'"
    return load_config(_schema(first.split(":", 1)[1].strip()), [path])


def test_there_are_configs():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_validates(path):
    _load(path)


def test_sd21_configs_hold_the_papers_settings():
    root = Path(__file__).resolve().parent.parent / "configs" / "sd21"
    ft = _load(root / "finetune.yaml")
    assert (ft.train.lr, ft.train.warmup_steps, ft.train.max_steps, ft.data.resolution) == (1e-6, 250, 20000, 512)
    assert (ft.loss.ddpm, ft.loss.output_kd, ft.loss.feature_kd) == (1.0, 2.0, 0.1)
    assert ft.train.micro_batch_size * 8 * ft.train.grad_accum_steps == 64  # effective batch on 8 GPUs
    bl = _load(root / "bilevel_nudity.yaml")
    assert (bl.preset, bl.every, bl.upper_lr, bl.train.lr) == ("official", 10, 5e-6, 1e-6)  # r = 0.5, the code's
    assert bl.resolved.upper.train_method == "full" and bl.resolved.upper.xt_source == "images"
    gen = _load(root / "generate_coco.yaml")
    assert (gen.sampler.scheduler, gen.sampler.steps, gen.sampler.guidance_scale) == ("pndm", 25, 7.5)
    esd = _load(root / "erase_esd_nudity.yaml")
    assert (esd.esd.lr, esd.esd.iterations, esd.esd.eta, esd.esd.train_method) == (1e-5, 1000, 1.0, "noxattn")
    pr = _load(root / "prune.yaml")
    assert pr.target == 0.8 and pr.num_experts == 8


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_launch_configs_parse(path):
    """accelerate's own parser reads them, and the FSDP one names the diffusers blocks that exist to wrap."""
    from accelerate.commands.config.config_args import ClusterConfig
    from diffusers.models.attention import BasicTransformerBlock  # noqa: F401
    from diffusers.models.resnet import ResnetBlock2D  # noqa: F401

    cfg = ClusterConfig.from_yaml_file(str(path))
    if str(cfg.distributed_type).endswith("FSDP"):
        assert set(cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")) <= {"BasicTransformerBlock",
                                                                                         "ResnetBlock2D"}


SD21 = ROOT / "sd21"


@functools.cache
def _sd21() -> dict:
    """Every sd21 config, loaded once for the tests below."""
    return {p.name: _load(p) for p in sorted(SD21.glob("*.yaml"))}


def _writes(cfg) -> set[str]:
    """What a loaded sd21 config's command writes that another command reads: a prune output (its experts are
    named by ``<out>@mac=R`` or ``<out>/experts/expert-K``), a trained or erased student's ``<out>/expert``
    (``<out>/pipeline`` for a dense one), a generation run folder."""
    out = getattr(cfg, "output_dir", None)
    if out is None:  # evaluate writes into the run it reads
        return set()
    if hasattr(cfg, "student"):
        return {f"{out}/expert" if cfg.student else f"{out}/pipeline"}
    return {out}


def _reads(cfg) -> list[str]:
    """The run paths a loaded sd21 config reads (student, model, run_dir), a ``@mac=`` selector as its folder."""
    paths = [getattr(cfg, k, None) for k in ("student", "model", "run_dir")]
    return [str(p).split("@mac=")[0] for p in paths if p and str(p).startswith("runs/sd21/")]


def test_each_sd21_config_reads_what_the_config_before_it_writes():
    """The paper's pipeline as the configs spell it: prune -> finetune -> erase -> attack, prune -> bilevel,
    generate -> evaluate. Every run path a config reads is a path another config writes."""
    loaded = _sd21()
    written = {w: name for name, cfg in loaded.items() for w in _writes(cfg)}
    for name, cfg in loaded.items():
        for path in _reads(cfg):
            assert path in written, f"{name} reads {path}, which no sd21 config writes (they write {sorted(written)})"
    assert written["runs/sd21/erase_esd_nudity/expert"] == "erase_esd_nudity.yaml"
    assert {loaded[f].model for f in ("attack_p4d_nudity.yaml", "attack_ringabell_nudity.yaml",
                                      "attack_unlearndiff_nudity.yaml")} == {"runs/sd21/erase_esd_nudity/expert"}
    for name in ("finetune.yaml", "bilevel_nudity.yaml", "bilevel_monet_official.yaml"):
        assert loaded[name].student == "runs/sd21/prune@mac=0.8", name  # the ~80%-MAC expert, by its ratio


def test_sd21_configs_run_at_512_px_and_leave_the_device_to_auto():
    """SD 2.1's own size is 768; the paper trains, samples and attacks at 512 (APTP prunes at its 256)."""
    for path in sorted(SD21.glob("*.yaml")):
        cfg = _sd21()[path.name]
        assert "device:" not in path.read_text(), f"{path.name} sets device (leave it to auto)"
        sampler, data = getattr(cfg, "sampler", None), getattr(cfg, "data", None)
        if sampler is not None and (hasattr(cfg, "attack") or path.name.startswith("generate")):
            assert (sampler.height, sampler.width) == (512, 512), path.name
        if data is not None and getattr(data, "source", None) == "coco":
            assert data.resolution == (256 if path.name == "prune.yaml" else 512), path.name
