"""Routed generation: each expert generates its own prompts, in batches, into one run folder (one manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import PromptRecord
from prunefit.generation.sample import GenerationResult, generate_run


def generate_routed(components, records: list[PromptRecord], ids: list[int], expert_unet: Callable[[int], object],
                    sampler: SamplerConfig, seed: int, out: Path, device: str = "cpu", grid_max_images: int = 0,
                    tag: str = "") -> GenerationResult:
    """Generate prompt i with expert ``ids[i]`` (its UNet from ``expert_unet(k)`` over ``components``), expert by
    expert; the result counts every expert's generated and skipped images."""
    generated = skipped = 0
    result = None
    for k in sorted(set(ids)):
        mine = [r for r, e in zip(records, ids) if e == k]
        comps_k = components.with_unet(expert_unet(k).to(device), f"{components.source}+routed:{tag}#{k}")
        result = generate_run(comps_k, mine, sampler, seed, out, device=device, grid_max_images=grid_max_images,
                              expert=k)
        generated += result.generated
        skipped += result.skipped
    assert result is not None
    result.generated, result.skipped = generated, skipped
    return result
