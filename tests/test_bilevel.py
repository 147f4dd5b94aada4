"""Bilevel suppression: both presets step the right optimizers at the right frequencies; bad inputs refused."""

from __future__ import annotations

import json

import pytest
import torch

from prunefit.config.load import load_config
from prunefit.errors import ConfigError
from prunefit.recipes import bilevel
from prunefit.removal.bilevel import BilevelConfig

BASE = ["model=tiny", "concepts=[skull]", "train.micro_batch_size=2", "upper_batch_size=2", "esd.ddim_steps=4",
        "train.lr=1e-4", "upper_lr=1e-4", "train.log_every=1", "train.checkpoint_every=100"]


def _run(tmp_path, name, *extra):
    cfg = load_config(BilevelConfig, [], [*BASE, f"output_dir={tmp_path / name}", *extra])
    res = bilevel.main(cfg)
    rows = [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    return res, rows


def test_official_preset_two_optimizers(tmp_path):
    res, rows = _run(tmp_path, "off", "preset=official", "train.max_steps=6", "upper_every=3")
    assert res.steps == 6
    state = json.loads(next((tmp_path / "off" / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["phase_steps"] == {"lower": 6, "upper": 2}
    assert sum("upper/total" in r for r in rows) >= 1
    summary = json.loads((tmp_path / "off" / "bilevel_summary.json").read_text())
    assert summary["upper_steps"] == 2 and summary["upper_every"] == 3


def test_official_preset_uses_images_and_full_parameters():
    cfg = load_config(BilevelConfig, [], [*BASE, "preset=official"])
    m = cfg.upper_config()
    assert (m.xt_source, m.train_method, cfg.every) == ("images", "full", 10)
    paper = load_config(BilevelConfig, [], [*BASE, "preset=paper"])
    assert paper.every == 20 and paper.upper_config().xt_source == "model" and paper.lam == 100.0
    mine = load_config(BilevelConfig, [], [*BASE, "preset=official", "upper_train_method=noxattn",
                                           "upper_xt_source=model"]).upper_config()
    assert (mine.train_method, mine.xt_source) == ("noxattn", "model")


def test_paper_preset_one_optimizer_with_lambda(tmp_path):
    res, rows = _run(tmp_path, "pap", "preset=paper", "train.max_steps=4", "upper_every=2", "lam=100")
    state = json.loads(next((tmp_path / "pap" / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["phase_steps"] == {"bilevel": 4}
    for r in rows:
        if "bilevel/lower" in r:
            expected = 100 * r["bilevel/lower"] + r.get("bilevel/upper", 0.0)
            assert r["bilevel/total"] == pytest.approx(expected, rel=1e-5)
    assert sum("bilevel/upper" in r for r in rows) == 2  # steps 2 and 4


def test_upper_every_one_steps_both_each_step_and_tracks_the_gap(tmp_path):
    _, rows = _run(tmp_path, "e1", "preset=official", "train.max_steps=2", "upper_every=1", "track_vartheta=true",
                   "train.val_every=2", "train.val_samples=2")
    assert all("upper/total" in r for r in rows if "lower/total" in r)
    gap = [r for r in rows if "val/constraint_gap" in r]
    assert gap and all(torch.isfinite(torch.tensor(r["val/constraint_gap"])) for r in gap)


@pytest.mark.parametrize("override, message", [("lam=0", "lam must be > 0"), ("preset=mine", "unknown bilevel preset"),
                                               ("upper_method=uce", "must be a train method"),
                                               ("upper_every=0", "upper_every must be >= 1")])
def test_bad_inputs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(BilevelConfig, [], [override])
