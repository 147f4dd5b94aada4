"""Derive a seed per prompt from the run seed and the prompt id (independent of batching and order)."""

from __future__ import annotations

import hashlib
from typing import Optional

import torch


def prompt_seed(run_seed: int, prompt_id: str, fixed: Optional[int] = None) -> int:
    """The seed of one prompt: ``fixed`` when the prompt file gives one (e.g. ``evaluation_seed``),
    else the first 63 bits of sha256("<run_seed>/<prompt_id>")."""
    if fixed is not None:
        return int(fixed)
    digest = hashlib.sha256(f"{run_seed}/{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def generators(seeds: list[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per prompt, so a prompt's noise never depends on its batch neighbours."""
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]
