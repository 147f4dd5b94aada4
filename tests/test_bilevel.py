"""Bilevel suppression: both presets step the right optimizers at the right frequencies, at the right learning
rates, with the upper term's gradient unbiased and confined to the upper method's parameters; bad inputs refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from prunefit.config.load import load_config
from prunefit.errors import ConfigError
from prunefit.recipes import bilevel
from prunefit.removal.bilevel import BilevelConfig

BASE = ["model=tiny", "concepts=[skull]", "train.micro_batch_size=2", "upper_batch_size=2", "esd.ddim_steps=4",
        "train.lr=1e-4", "upper_lr=3e-4", "train.log_every=1", "train.checkpoint_every=100", "train.warmup_steps=0",
        "upper_warmup_steps=0"]


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


def test_paper_preset_one_optimizer_at_the_lower_lr_with_an_unbiased_upper_term(tmp_path):
    res, rows = _run(tmp_path, "pap", "preset=paper", "train.max_steps=4", "upper_every=2", "lam=100")
    state = json.loads(next((tmp_path / "pap" / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["phase_steps"] == {"bilevel": 4}
    lower_rows = [r for r in rows if "bilevel/lower" in r]
    assert len(lower_rows) == 4
    for r in lower_rows:
        assert r["bilevel/lr"] == pytest.approx(1e-4)  # train.lr, not upper_lr (3e-4)
        # lambda L_ft every step + k f every k-th step: the expected weight of f is 1, not 1/k
        expected = 100 * r["bilevel/lower"] + 2 * r.get("bilevel/upper", 0.0)
        assert r["bilevel/total"] == pytest.approx(expected, rel=1e-5)
    assert sum("bilevel/upper" in r for r in rows) == 2  # steps 2 and 4
    assert res.balance["r"] is None and res.balance["lam"] == 100 and res.balance["lower_lr"] == 1e-4


def test_upper_every_one_steps_both_each_step_and_tracks_the_gap(tmp_path):
    _, rows = _run(tmp_path, "e1", "preset=official", "train.max_steps=2", "upper_every=1", "track_vartheta=true",
                   "train.val_every=2", "train.val_samples=2")
    lower = [r for r in rows if "lower/total" in r]
    assert lower and all("upper/total" in r for r in lower)
    gap = [r for r in rows if "val/constraint_gap" in r]
    assert gap and all(torch.isfinite(torch.tensor(r["val/constraint_gap"])) for r in gap)


@pytest.mark.parametrize("override, message", [("lam=0", "lam must be > 0"), ("preset=mine", "unknown bilevel preset"),
                                               ("upper_method=uce", "must be a train method"),
                                               ("double_loop=twice", "double_loop must be one of"),
                                               ("upper_every=0", "upper_every must be >= 1")])
def test_bad_inputs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(BilevelConfig, [], [override])


def test_penalized_gradient_is_lambda_lower_plus_k_upper_on_the_subset_only():
    """Over k steps the summed gradient is k (lambda grad L_ft) + k grad_S f: unbiased, and f never reaches the
    parameters outside the upper method's subset S."""
    from prunefit.objectives.base import LossOutput
    from prunefit.removal.bilevel.objective import PenalizedObjective

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    x = torch.randn(5, 3)
    lower = lambda start, n: LossOutput(model(x).pow(2).mean())  # noqa: E731
    upper = lambda start, n: LossOutput((model(x) - 1).abs().mean())  # noqa: E731
    subset = list(model[1].parameters())
    obj = PenalizedObjective(lower, upper, model, subset, lam=3.0, f_every=4, upper_batch=1)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    for step in range(4):
        model.zero_grad()
        obj(0, 1, step=step).total.backward()
        for g, p in zip(grads, model.parameters()):
            g += p.grad
    model.zero_grad()
    g_low = torch.autograd.grad(lower(0, 1).total, list(model.parameters()))
    g_up = torch.autograd.grad(upper(0, 1).total, subset)
    expected = [4 * 3.0 * gl for gl in g_low]
    expected[2] = expected[2] + 4 * g_up[0]
    expected[3] = expected[3] + 4 * g_up[1]
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # the subset scope restored the flags


def test_paper_preset_upper_gradient_stays_in_the_method_subset(tiny, tmp_path):
    from prunefit.data.datasets import ToyWorldData
    from prunefit.removal.bilevel.phases import build_phases

    cfg = load_config(BilevelConfig, [], [*BASE, "preset=paper", "upper_every=1", "esd.train_method=xattn"])
    student = copy.deepcopy(tiny.unet).requires_grad_(True)
    built = build_phases(cfg, student, tiny, ToyWorldData(), None, "cpu")
    (phase,) = built.phases
    out = phase.objective(0, 2, step=0)
    full = torch.autograd.grad(out.total, list(student.parameters()), allow_unused=True)
    lower = torch.autograd.grad(cfg.lam * built.lower(0, 2).total, list(student.parameters()), allow_unused=True)
    names = [n for n, _ in student.named_parameters()]
    moved = {n for n, a, b in zip(names, full, lower) if a is not None and not torch.allclose(a, b, atol=1e-7)}
    assert moved and all("attn2" in n for n in moved)


def test_nested_reading_runs_vartheta_every_step_and_theta_every_k(tmp_path):
    res, rows = _run(tmp_path, "nest", "preset=paper", "double_loop=nested", "train.max_steps=4", "upper_every=2")
    state = json.loads(next((tmp_path / "nest" / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["phase_steps"] == {"vartheta": 4, "theta": 2}
    theta = [r for r in rows if "theta/total" in r]
    assert len(theta) == 2 and all(r["theta/lr"] == pytest.approx(3e-4) for r in theta)
    twin = [r for r in rows if "vartheta/lr" in r]
    assert len(twin) == 4 and all(r["vartheta/lr"] == pytest.approx(1e-4) for r in twin)
    assert res.balance["r"] == pytest.approx(3e-4 / (2 * 1e-4))


def test_official_preset_conditions_on_captions_with_the_lower_batch(tiny):
    from prunefit.objectives.inputs import sample_generator
    from prunefit.removal.context import RemovalContext
    from prunefit.removal.esd.method import ESDObjective

    cfg = load_config(BilevelConfig, [], ["model=tiny", "concepts=[skull]", "preset=official",
                                          "train.micro_batch_size=3"])
    m = cfg.upper_config()
    assert (m.condition, m.batch_size, m.xt_source) == ("caption", 3, "images")
    obj = ESDObjective(RemovalContext(tiny.unet, tiny.unet, tiny), tiny.unet, m)
    gens = [sample_generator(0, 11, i) for i in range(3)]
    x, t, cond = obj.inputs(0, 3, gens)
    _, _, captions = obj.xt_from_images(0, 3, [sample_generator(0, 11, i) for i in range(3)])
    assert cond.shape[0] == 3 and len(set(captions)) > 1
    assert torch.allclose(cond, obj.ctx.text(captions))
    assert cfg.balance()["r"] == pytest.approx(5e-6 / (10 * cfg.train.lr))


def test_summary_records_the_balance(tmp_path):
    _run(tmp_path, "sum", "preset=official", "train.max_steps=2", "upper_every=2")
    summary = json.loads((tmp_path / "sum" / "bilevel_summary.json").read_text())
    b = summary["balance"]
    assert b["r"] == pytest.approx(3e-4 / (2 * 1e-4)) and b["upper_lr"] == 3e-4 and b["lower_lr"] == 1e-4
    assert (b["lower_batch"], b["upper_batch"], b["upper_every"]) == (2, 2, 2) and b["lam"] is None
