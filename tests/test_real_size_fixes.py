"""Bugs found by the full-size smoke run (scripts/smoke_sd.py), each pinned by a fast test on tiny models."""

from __future__ import annotations

import copy

import torch

from prunefit.objectives.base import LossOutput
from prunefit.removal.bilevel.objective import PenalizedObjective


def _penalized_grads(unet, checkpointing: bool) -> dict[str, torch.Tensor]:
    unet = copy.deepcopy(unet).train().requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    c = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([10])

    def lower(start, n):
        return LossOutput(unet(x, t, c).sample.pow(2).mean(), {})

    def upper(start, n):
        return LossOutput((unet(x, t, c).sample - 1).pow(2).mean(), {})

    subset = [p for n, p in unet.named_parameters() if "attn2" in n]
    obj = PenalizedObjective(lower, upper, unet, subset, lam=3.0, f_every=2, upper_batch=1)
    out = obj(0, 1, step=1)  # (step + 1) % f_every == 0: the upper term is in
    out.total.backward()
    return {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}, float(out.total)


def test_paper_preset_objective_works_with_gradient_checkpointing(tiny):
    """The upper term's subset flags used to be restored before backward, so checkpointing's recompute saw other
    requires_grad flags than the forward and raised CheckpointError. Same gradients with and without it."""
    plain, v1 = _penalized_grads(tiny.unet, checkpointing=False)
    ckpt, v2 = _penalized_grads(tiny.unet, checkpointing=True)
    assert v1 == v2
    assert plain.keys() == ckpt.keys()
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-6, rtol=1e-5), k
