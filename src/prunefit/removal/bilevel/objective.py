"""The paper preset's objective: the theta-gradient of G_lambda (Eq. 18-19) as one loss per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from prunefit.objectives.base import LossOutput, gradients_only_to


@dataclass
class PenalizedObjective:
    """lambda * L_ft(lower batch) at every call, + f_every * f(upper batch) at every ``f_every``-th phase step.

    The gradient is lambda grad L_ft (all parameters) + f_every grad_S f (only ``upper_params``, the upper
    method's subset S), so over f_every steps the expected gradient is lambda grad L_ft + grad_S f:
    f_every = k for the interleaved reading, 1 for the nested one (its theta phase runs every k-th step).
    Upper batch j (the j-th evaluation of f) reads upper samples ((j * world + rank) * upper_batch) onwards.
    """

    lower: Callable[[int, int], LossOutput]
    upper: Callable[[int, int], LossOutput]
    model: torch.nn.Module
    upper_params: list[torch.nn.Parameter]
    lam: float
    f_every: int
    upper_batch: int
    rank: int = 0
    world: int = 1
    uses_step: ClassVar[bool] = True

    def __call__(self, start: int, n: int, step: int) -> LossOutput:
        low = self.lower(start, n)
        total = self.lam * low.total
        parts = {f"lower/{k}": v for k, v in low.parts.items()}
        parts["lower"] = low.total
        if (step + 1) % self.f_every == 0:
            j = step // self.f_every
            with gradients_only_to(self.model, self.upper_params):
                up = self.upper((j * self.world + self.rank) * self.upper_batch, self.upper_batch)
                # f's backward runs here, while the subset flags hold: gradient checkpointing recomputes the
                # forward during backward and must see the flags the forward saw (else CheckpointError)
                params = [p for p in self.upper_params if p.requires_grad]
                grads = torch.autograd.grad(self.f_every * up.total, params, allow_unused=True)
            # zero-valued term whose gradient is f_every * grad_S f; the total's value is unchanged
            surrogate = sum((p * g).sum() for p, g in zip(params, grads) if g is not None)
            total = total + self.f_every * up.total.detach()
            if torch.is_tensor(surrogate):
                total = total + (surrogate - surrogate.detach())
            parts["upper"] = up.total
            parts["upper_weight"] = torch.tensor(float(self.f_every), device=total.device)
        return LossOutput(total, parts)
