"""Learning-rate schedules as plain functions of the step (exactly resumable: no hidden state)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(opt: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR scheduler of ``opt``: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
