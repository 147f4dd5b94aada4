"""Negative-guidance targets (ESD, Gandikota et al. 2023): eps(x, c) <- eps*(x) - eta (eps*(x, c) - eps*(x))."""

from __future__ import annotations

import torch


def negative_guidance_target(uncond: torch.Tensor, cond: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """The edited model's target for the concept prompt. [B, C, H, W] x2 -> [B, C, H, W].

    Valid in epsilon and v space alike: the weights (1 + eta, -eta) sum to one.
    """
    return uncond - eta * (cond - uncond)
