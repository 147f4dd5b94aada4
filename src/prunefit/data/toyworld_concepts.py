"""Toy-world renders of a concept (an artist's style or the unsafe object), the real-image analogue of
the official bilevel code's concept data sets (rezashkv/controlled_distillation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prunefit.errors import ConfigError


@dataclass
class ToyWorldConceptData:
    concepts: list[str]
    seed: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        from prunefit.toyworld.world import ARTISTS, UNSAFE_PHRASES

        for c in self.concepts:
            if c not in ARTISTS and c not in UNSAFE_PHRASES and c != "unsafe":
                raise ConfigError(f"unknown toy-world concept {c!r}; available: {[*ARTISTS, *UNSAFE_PHRASES]}")

    def samples(self, start: int, n: int) -> tuple[torch.Tensor, list[str]]:
        """Concept scenes start .. start+n-1 (cycling over the concepts) as images [n, 3, H, W] in [-1, 1], and their
        captions."""
        from prunefit.toyworld.world import ARTISTS, UNSAFE, caption, render, sample_scene

        imgs, caps = [], []
        for i in range(start, start + n):
            rng = np.random.default_rng([self.seed, 13, i])
            concept = self.concepts[i % len(self.concepts)]
            if concept in ARTISTS:
                scene = sample_scene(rng, p_unsafe=0.0, artist=concept)
            else:
                scene = sample_scene(rng, obj=UNSAFE, artist=None)
            imgs.append(render(scene))
            caps.append(caption(scene, rng))
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0, caps
