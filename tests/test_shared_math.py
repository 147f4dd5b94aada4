"""The maths written once: forward diffusion, per-sample latent draws and the EMA, by hand and against diffusers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from prunefit.models.schedulers import sd_training_scheduler_config
from prunefit.objectives.noise import add_noise, posterior_draws
from prunefit.training.runtime import EMA, ema_update


def test_add_noise_by_hand():
    acp = torch.tensor([0.25, 0.64])
    x, eps = torch.ones(2, 1, 1, 1), torch.full((2, 1, 1, 1), 2.0)
    got = add_noise(x, eps, acp, torch.tensor([0, 1])).flatten().tolist()
    assert got == pytest.approx([0.5 + math.sqrt(0.75) * 2, 0.8 + 0.6 * 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_noise_is_bit_identical_to_diffusers(dtype):
    """The toy build, APTP and the attacks used DDPMScheduler.add_noise: the shared one changes no bit."""
    sched = DDPMScheduler.from_config(sd_training_scheduler_config("epsilon"))
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1000, 4, 4, 4, generator=g).to(dtype), torch.randn(1000, 4, 4, 4, generator=g).to(dtype)
    t = torch.arange(1000)
    assert torch.equal(add_noise(x, eps, sched.alphas_cumprod, t), sched.add_noise(x, eps, t))


def test_posterior_draws_are_per_sample_and_follow_the_formula():
    mean, std = torch.randn(3, 4, 2, 2), torch.rand(3, 4, 2, 2)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]  # noqa: E731
    lat, noise, t = posterior_draws(mean, std, gens(), 0.5, 1000)
    parts = [posterior_draws(mean[i : i + 1], std[i : i + 1], [g], 0.5, 1000) for i, g in enumerate(gens())]
    assert torch.equal(lat, torch.cat([p[0] for p in parts])) and torch.equal(t, torch.cat([p[2] for p in parts]))
    g = torch.Generator().manual_seed(5)  # sample 0 by hand: eps, then noise, then t from its own generator
    eps0, noise0 = torch.randn(4, 2, 2, generator=g), torch.randn(4, 2, 2, generator=g)
    t0 = torch.randint(0, 1000, (1,), generator=g)
    assert torch.allclose(lat[0], (mean[0] + std[0] * eps0) * 0.5) and torch.equal(noise[0], noise0)
    assert t[0] == t0 and t.dtype == torch.long and lat.shape == noise.shape == (3, 4, 2, 2)


def test_ema_by_hand():
    shadow = {"w": torch.zeros(2)}
    ema_update(shadow, [("w", torch.ones(2))], decay=0.9, step=0)  # warm-up: d = min(0.9, 1/10) = 0.1
    assert shadow["w"].tolist() == pytest.approx([0.9, 0.9])
    ema_update(shadow, [("w", torch.zeros(2))], decay=0.9, step=100)  # d = min(0.9, 101/110) = 0.9
    assert shadow["w"].tolist() == pytest.approx([0.81, 0.81])
    ema_update(shadow, [("b", torch.full((1,), 3.0))], decay=0.9, step=5)  # a new key starts at its value
    assert shadow["b"].item() == 3.0


def test_the_ema_class_uses_the_shared_update():
    model = torch.nn.Linear(2, 1)
    ema = EMA(decay=0.99)
    ema.update(model, 0)
    with torch.no_grad():
        model.weight.add_(1.0)
    expected = {k: v.clone() for k, v in ema.shadow.items()}
    ema_update(expected, model.named_parameters(), 0.99, 7)
    ema.update(model, 7)
    assert all(torch.equal(ema.shadow[k], expected[k]) for k in expected)
    assert not torch.equal(ema.shadow["weight"], model.weight)


def test_the_held_out_batch_is_fixed_its_own_and_never_a_training_sample():
    from prunefit.config.schema import DataConfig
    from prunefit.data.datasets import build_data
    from prunefit.models.components import load_components
    from prunefit.objectives.inputs import HELD_OUT_START, HELD_OUT_STREAM, InputBuilder, held_out_batch

    comps = load_components("tiny")
    data = build_data(DataConfig(), comps.native_resolution, 3)
    train = InputBuilder(components=comps, data=data, seed=3, num_train_timesteps=1000, stream=0)
    a, b = held_out_batch(train, 3, 2), held_out_batch(train, 3, 2)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.noise, b.noise) and a.captions == b.captions
    by_hand = InputBuilder(components=comps, data=data, seed=4, num_train_timesteps=1000,
                           stream=HELD_OUT_STREAM)(HELD_OUT_START, 2)  # seed + 1, own stream
    assert torch.equal(a.noise, by_hand.noise) and torch.equal(a.timesteps, by_hand.timesteps)
    assert not torch.equal(a.noise, train(0, 2).noise)
