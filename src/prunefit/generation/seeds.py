"""Derive a seed per prompt from the run seed and the prompt id (independent of batching and order), and the
CPU generators every sampling path hands the pipeline for its initial noise."""

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


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per prompt, so a prompt's noise never depends on its batch neighbours nor on the device.

    Always on the CPU (diffusers' advice): ``randn_tensor`` draws on a generator's device and then moves the noise
    to the pipeline's, so a seed gives the same initial latents on CPU and every GPU, in every sampling path."""
    return [torch.Generator().manual_seed(s) for s in seeds]
