"""Experiment trackers (``train.report_to``, accelerate's): TensorBoard scalars equal log.jsonl's, sample grids as
images, ``none`` writes no event file, an unknown or uninstalled tracker is refused in one line before any loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prunefit.config.load import load_config
from prunefit.config.schema import TRACKERS, FinetuneConfig, TrainConfig
from prunefit.errors import ConfigError
from prunefit.recipes import finetune

BASE = ["model=tiny", "train.micro_batch_size=4", "train.lr=1e-3", "train.warmup_steps=2", "train.log_every=1",
        "train.checkpoint_every=2", "train.max_steps=2"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    finetune.main(load_config(FinetuneConfig, [], [*BASE, f"output_dir={out}", *extra]))
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return out, [r for r in rows if "lower/total" in r]


def test_tensorboard_holds_the_logged_scalars_and_the_sample_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert TrainConfig().report_to == "tensorboard"  # the default: today's <out>/tensorboard
    out, rows = _run(tmp_path, "tb", "train.sample_every=2", "train.sample_prompts=[a red circle]")
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("lower/total", "lower/ddpm", "lower/output_kd", "lower/feature_kd", "lower/lr", "steps_per_s"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(r["step"], np.float32(r[key])) for r in rows], key  # TensorBoard stores float32
    assert [e.value for e in events.Scalars("lower/lr")] == [np.float32(5e-4), np.float32(1e-3)]  # warm-up over 2
    grid = events.Images("samples")
    assert [e.step for e in grid] == [2] and (out / "samples" / "step-00000002.png").is_file()
    from PIL import Image

    png = Image.open(out / "samples" / "step-00000002.png")
    assert (grid[0].width, grid[0].height) == png.size


def test_report_to_none_writes_no_event_file_and_the_same_log(tmp_path):
    _, with_tb = _run(tmp_path, "tb")
    out, rows = _run(tmp_path, "none", "train.report_to=none")
    assert not (out / "tensorboard").exists() and not list(out.rglob("events.out.tfevents*"))
    drop = ("time", "steps_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in with_tb]


def test_unknown_or_missing_tracker_is_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown tracker 'wandbx' in train.report_to; available: \['tensorboard'"):
        load_config(FinetuneConfig, [], ["train.report_to=wandbx"])
    with pytest.raises(ConfigError, match="unknown tracker 'none,tensorboard'"):
        TrainConfig(report_to="none,tensorboard")
    from accelerate.utils import LoggerType

    assert set(TRACKERS) == {t.value for t in LoggerType} | {"none"}  # every accelerate tracker name, and none
    from prunefit.recipes import finetune as recipe

    loaded = []
    monkeypatch.setattr(recipe, "load_components", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [LoggerType.TENSORBOARD])  # no wandb
    cfg = load_config(FinetuneConfig, [], [*BASE, f"output_dir={tmp_path / 'w'}", "train.report_to=tensorboard,wandb"])
    with pytest.raises(ConfigError) as err:
        finetune.main(cfg)
    assert str(err.value).startswith("train.report_to=wandb needs the wandb package (pip install wandb)")
    assert "\n" not in str(err.value) and not loaded  # refused before any model loads
