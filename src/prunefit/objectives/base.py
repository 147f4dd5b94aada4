"""The result type every objective returns."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch


@dataclass
class LossOutput:
    """The scalar to optimize and its named parts (already weighted parts are not assumed)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def detached(self) -> dict[str, float]:
        """Parts as floats (a host sync: call only at logging intervals)."""
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.parts.items()}}


@contextmanager
def gradients_only_to(model: torch.nn.Module, params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Inside the block, forward passes of ``model`` record gradients only for ``params`` (the others are
    treated as constants), so a loss computed inside reaches just that parameter subset; the previous
    ``requires_grad`` flags are restored on exit."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep and p.requires_grad)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
