"""The result type every objective returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """The scalar to optimize and its named parts (already weighted parts are not assumed)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def detached(self) -> dict[str, float]:
        """Parts as floats (a host sync: call only at logging intervals)."""
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.parts.items()}}
