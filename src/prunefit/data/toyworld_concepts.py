"""Toy-world renders of a concept (an artist's style or the unsafe object), the real-image analogue of
the official bilevel code's concept data sets (rezashkv/controlled_distillation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prunefit.errors import ConfigError

VOCABULARIES = ("concept", "all")


@dataclass
class ToyWorldConceptData:
    concepts: list[str]
    seed: int = 0
    skipped: int = 0
    vocabulary: str = "concept"
    """concept: the unsafe object is captioned only by the erased concept's own word ("skull"), so no training
    path sees the other phrasings the adversarial evaluation set is written in; all: any phrasing the teacher
    knows ("cranium", "death's head", ...: the evaluation vocabulary, kept only to reproduce archived runs)."""

    def __post_init__(self) -> None:
        from prunefit.toyworld.world import ARTISTS, UNSAFE_PHRASES

        for c in self.concepts:
            if c not in ARTISTS and c not in UNSAFE_PHRASES and c != "unsafe":
                raise ConfigError(f"unknown toy-world concept {c!r}; available: {[*ARTISTS, *UNSAFE_PHRASES]}")
        if self.vocabulary not in VOCABULARIES:
            raise ConfigError(f"concept caption vocabulary must be one of {list(VOCABULARIES)}, "
                              f"got {self.vocabulary!r}")

    def _scene(self, i: int):
        """Concept scene ``i`` (cycling over the concepts), its generator (which the caption goes on drawing from) and
        the caption word of the unsafe object (None: any phrasing)."""
        from prunefit.toyworld.world import ARTISTS, UNSAFE, UNSAFE_MAIN_WORD, sample_scene

        rng = np.random.default_rng([self.seed, 13, i])
        concept = self.concepts[i % len(self.concepts)]
        if concept in ARTISTS:
            scene = sample_scene(rng, p_unsafe=0.0, artist=concept)
        else:
            scene = sample_scene(rng, obj=UNSAFE, artist=None)
        word = None
        if scene.unsafe and self.vocabulary == "concept":
            word = UNSAFE_MAIN_WORD if concept == "unsafe" else concept
        return scene, rng, word

    def captions(self, start: int, n: int) -> list[str]:
        """The captions of concept samples [start, start + n) without rendering."""
        from prunefit.toyworld.world import caption

        out = []
        for i in range(start, start + n):
            scene, rng, word = self._scene(i)
            out.append(caption(scene, rng, unsafe_word=word))
        return out

    def samples(self, start: int, n: int) -> tuple[torch.Tensor, list[str]]:
        """Concept scenes start .. start+n-1 (cycling over the concepts) as images [n, 3, H, W] in [-1, 1], and their
        captions."""
        from prunefit.toyworld.world import caption, render

        imgs, caps = [], []
        for i in range(start, start + n):
            scene, rng, word = self._scene(i)
            imgs.append(render(scene))
            caps.append(caption(scene, rng, unsafe_word=word))
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0, caps
