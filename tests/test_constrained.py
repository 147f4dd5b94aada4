"""The constrained bilevel preset: the dual update on a hand-computable sequence, its state carried by checkpoints,
the twin on the lower level's batches, and the effective r recorded."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from prunefit.config.load import load_config
from prunefit.recipes import bilevel
from prunefit.removal.bilevel import BilevelConfig
from prunefit.removal.bilevel.dual import DualController, DualSettings, dual_step, effective_r, smooth


def _controller(beta=0.0, rho=0.5, delta_frac=0.05, r_max=0.5):
    lower, twin = SimpleNamespace(last={}), SimpleNamespace(last={})
    ctl = DualController(DualSettings(delta_frac, rho, beta, r_max), lower, twin, warmup=lambda step: 1.0)
    ctl.bind(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    return ctl, lower, twin


def _feed(ctl, lower, twin, step, l_theta, l_vartheta):
    lower.last, twin.last = {"total": torch.tensor(l_theta)}, {"total": torch.tensor(l_vartheta)}
    return ctl(step)


def test_the_dual_update_by_hand():
    assert dual_step(0.0, 0.1, 0.05, 0.5) == pytest.approx(0.5)  # 0 + 0.5 * (0.1 - 0.05) / 0.05
    assert dual_step(0.2, 0.0, 0.05, 0.5) == 0.0  # never below 0
    assert effective_r(0.5, 3.0) == pytest.approx(0.125)
    assert smooth(None, 2.0, 0.9) == 2.0 and smooth(2.0, 1.0, 0.9) == pytest.approx(1.9)
    ctl, lower, twin = _controller()
    # delta = 0.05 * 1.0; gaps 0.1, 0.3, 0.0 -> mu 0.5, 3.0, 2.5
    assert _feed(ctl, lower, twin, 0, 1.1, 1.0) == pytest.approx(1 / 1.5)
    assert _feed(ctl, lower, twin, 1, 1.3, 1.0) == pytest.approx(1 / 4.0)
    assert _feed(ctl, lower, twin, 1, 9.9, 1.0) == pytest.approx(1 / 4.0)  # once per step: a second call reads
    assert _feed(ctl, lower, twin, 2, 1.0, 1.0) == pytest.approx(1 / 3.5)
    s = ctl.summary()
    assert s["mu"] == pytest.approx(2.5) and s["r_eff"] == pytest.approx(0.5 / 3.5)
    assert s["delta"] == pytest.approx(0.05)


def test_smoothing_enters_the_gap_and_the_allowed_gap():
    ctl, lower, twin = _controller(beta=0.5)
    _feed(ctl, lower, twin, 0, 1.2, 1.0)  # first values start the averages: gap 0.2, ref 1.0 -> mu 0.5 * 3 = 1.5
    assert ctl.mu == pytest.approx(1.5)
    _feed(ctl, lower, twin, 1, 2.0, 2.0)  # gap 0.5 * 0.2 + 0.5 * 0 = 0.1; ref 1.5 -> delta 0.075
    assert ctl.summary()["delta"] == pytest.approx(0.075)
    assert ctl.mu == pytest.approx(1.5 + 0.5 * (0.1 - 0.075) / 0.075)


def test_the_dual_state_travels_with_the_upper_optimizer():
    ctl, lower, twin = _controller()
    _feed(ctl, lower, twin, 0, 1.3, 1.0)
    saved = ctl.optimizer.state_dict()
    again, lower2, twin2 = _controller()
    again.optimizer.load_state_dict(saved)  # what a resumed run does
    assert again.mu == pytest.approx(ctl.mu) and again.mu > 0
    assert _feed(again, lower2, twin2, 0, 5.0, 1.0) == pytest.approx(1 / (1 + ctl.mu))  # step 0 already counted


BASE = ["model=tiny", "concepts=[skull]", "preset=constrained", "train.micro_batch_size=2", "upper_batch_size=2",
        "esd.ddim_steps=4", "train.lr=1e-4", "upper_lr=4e-4", "train.log_every=1", "train.checkpoint_every=100",
        "train.warmup_steps=0", "upper_warmup_steps=0", "upper_every=2", "train.max_steps=4"]


def test_constrained_run_twin_on_the_same_batches_and_the_effective_r_logged(tmp_path):
    cfg = load_config(BilevelConfig, [], [*BASE, f"output_dir={tmp_path / 'c'}"])
    assert cfg.tracks_vartheta and cfg.balance_r() == pytest.approx(4e-4 / (2 * 1e-4))
    bilevel.main(cfg)
    rows = [json.loads(x) for x in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows if "lower/total" in r}
    # step 1: theta and vartheta are the same weights on the same batch (no upper step yet): the same L_ft
    assert by_step[1]["lower/total"] == pytest.approx(by_step[1]["vartheta/total"], rel=1e-6)
    # after the first upper step theta has moved off vartheta: the gap is measured on the same batch
    assert by_step[3]["lower/total"] != pytest.approx(by_step[3]["vartheta/total"], rel=1e-9)
    upper = [r for r in rows if "upper/r_eff" in r]
    assert upper and all(0 < r["upper/r_eff"] <= 2.0 + 1e-9 for r in upper)
    assert all(r["upper/lr"] == pytest.approx(4e-4 / (1 + r["upper/dual_mu"])) for r in upper)
    summary = json.loads((tmp_path / "c" / "bilevel_summary.json").read_text())
    assert summary["dual"]["r_max"] == pytest.approx(2.0) and summary["balance"]["dual_delta"] == 0.05
    state = json.loads(next((tmp_path / "c" / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["phase_steps"] == {"lower": 4, "vartheta": 4, "upper": 2}


def test_pareto_points_of_the_constrained_family_and_of_advunlearn_as_the_upper_method():
    from prunefit.errors import ConfigError
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import Point, grid, point_config
    from prunefit.experiments.table3.run import Table3

    cfg = ParetoConfig(constrained_delta_grid=[0.02, 0.1], constrained_r_max=1.0)
    assert [p.name for p in grid(cfg) if p.family == "constrained"] == ["constrained-delta0.02", "constrained-delta0.1"]
    t, row = point_config(cfg, Point("constrained", 0.02), 0)
    b = Table3(t).bilevel_config("esd", "skull", Path("-"), Path("-"))
    assert row == "ours_esd" and b.preset == "constrained" and b.dual_delta == 0.02 and b.tracks_vartheta
    assert b.resolved.upper.train_method == "full" and b.balance_r() == pytest.approx(1.0)
    adv = ParetoConfig(upper_method="advunlearn", official_r_grid=[0.5])
    t, row = point_config(adv, Point("two-stage", 50), 0)
    assert row == "distilled+advunlearn" and t.advunlearn_iterations == 50
    assert point_config(adv, Point("official", 0.5), 0)[1] == "ours_advunlearn"
    with pytest.raises(ConfigError, match="sequential and redistil controls run ESD"):
        ParetoConfig(upper_method="advunlearn", sequential_grid=[50])
