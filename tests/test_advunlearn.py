"""AdvUnlearn's inner attack: a warm-started prefix soft token in token-embedding space whose perturbation
reaches its budget eps; the reference's schedule scaled to a smaller budget keeps its proportions."""

from __future__ import annotations

import pytest
import torch

from prunefit.removal.advunlearn.method import AdvUnlearnConfig, AdvUnlearnObjective
from prunefit.removal.context import RemovalContext


def _objective(tiny, **kw):
    cfg = AdvUnlearnConfig(concepts=["skull"], ddim_steps=4, **kw)
    return AdvUnlearnObjective(RemovalContext(tiny.unet, tiny.unet, tiny), tiny.unet, cfg)


def test_warm_started_perturbation_reaches_eps(tiny):
    obj = _objective(tiny, attack_warmup=0, attack_steps=3, attack_lr=0.05, attack_eps=0.5)
    norms = [float(obj(i, 1).parts["attack_norm"]) for i in range(4)]
    # 3 signed steps of 0.05 per iteration, warm-started: 0.15, 0.30, 0.45, then clamped at eps
    assert norms[0] == pytest.approx(0.15, abs=1e-6)
    assert norms[-1] == pytest.approx(0.5, abs=1e-6)
    assert norms == sorted(norms)


def test_random_init_restarts_every_iteration(tiny):
    obj = _objective(tiny, attack_warmup=0, attack_steps=3, attack_lr=0.05, attack_init="random")
    norms = [float(obj(i, 1).parts["attack_norm"]) for i in range(3)]
    assert max(norms) == pytest.approx(0.15, abs=1e-6)


def test_warmup_iterations_use_clean_prompts(tiny):
    obj = _objective(tiny, attack_warmup=2, attack_steps=2, attack_lr=0.05)
    norms = [float(obj(i, 1).parts["attack_norm"]) for i in range(3)]
    assert norms[:2] == [0.0, 0.0] and norms[2] == pytest.approx(0.1, abs=1e-6)


def test_attack_lowers_its_own_objective(tiny):
    """The PGD steps make the edited model's prediction on [p] + concept closer to the frozen reference."""
    from prunefit.attacks.soft_prompt import encode_with_prefix
    from prunefit.objectives.inputs import sample_generator

    torch.manual_seed(0)
    edited = type(tiny.unet).from_config(tiny.unet.config)  # a different model: the attack has work to do
    obj = AdvUnlearnObjective(RemovalContext(edited, tiny.unet, tiny), edited,
                              AdvUnlearnConfig(concepts=["skull"], ddim_steps=4, attack_warmup=0, attack_steps=20,
                                               attack_lr=0.02, attack_eps=2.0))
    gens = [sample_generator(0, 17, 0)]
    x, t = obj.esd.xt_from_model(gens, obj.esd.text("skull"), 1)
    _, ref = obj.esd.targets(x, t, obj.ctx.text(["skull"]))

    def loss(p):
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(edited(x, t, encode_with_prefix(tiny, ["skull"], p)).sample, ref))

    p0 = obj._start("skull").clone()
    p1 = obj.attack("skull", ["skull"], x, t, ref)
    assert loss(p1) < loss(p0)


def test_scaled_schedule_keeps_the_reference_proportions():
    c = AdvUnlearnConfig().scaled(100)
    assert (c.iterations, c.attack_warmup, c.attack_steps) == (100, 20, 3)
    assert c.attack_steps * c.attack_lr == pytest.approx(30 * 1e-3)
    full = AdvUnlearnConfig().scaled(1000)
    assert (full.attack_warmup, full.attack_steps, full.attack_lr) == (200, 30, pytest.approx(1e-3))
