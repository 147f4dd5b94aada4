"""Knowledge-distillation losses (BK-SDM style): output KD and feature KD over block outputs."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def output_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher UNet outputs, in fp32. [B, C, H, W] x2 -> scalar."""
    return F.mse_loss(student.float(), teacher.float().detach())


def feature_kd(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the MSE between block outputs (the official code's 1/9 sum over 9 blocks)."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"feature KD needs matching non-empty block lists, got {len(student)} and {len(teacher)}")
    return torch.stack([F.mse_loss(s.float(), t.float().detach()) for s, t in zip(student, teacher)]).mean()
