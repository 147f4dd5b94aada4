"""Per-sample diffusion inputs: latents, text states, noise and timesteps as functions of the sample index.

Every random draw of sample i comes from a generator seeded by (seed, stream, i), so a batch of 8 equals
two batches of 4 (exact gradient accumulation), a resumed run repeats the uninterrupted one, and
processes draw disjoint samples. Latents come from the VAE or from a ``prunefit cache`` folder (its
stored latent mean and std, sampled with the same per-sample noise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from prunefit.data.cache import LatentCache
from prunefit.data.loader import prefetching
from prunefit.models.components import Components, encode_prompts
from prunefit.objectives.noise import posterior_draws
from prunefit.objectives.streams import Stream
from prunefit.utils.device import as_device

HELD_OUT_STREAM = Stream.HELD_OUT
HELD_OUT_START = 10**9
"""First held-out sample index: far beyond any training step's samples."""


def sample_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator seeded by (seed, stream, index): sample ``index``'s own random draws."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + stream) * 1_000_000_007 + index) % (2**63 - 1))


@dataclass
class DiffusionBatch:
    latents: torch.Tensor
    text: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    captions: list[str]


@dataclass(kw_only=True)
class InputBuilder:
    """Builds ``DiffusionBatch``es for samples [start, start + n) of a data source."""

    components: Components
    data: object
    seed: int
    num_train_timesteps: int = 1000
    stream: int = Stream.LOWER
    cache: Optional[LatentCache] = None
    device: str | torch.device = "auto"
    """auto (the default, as every config's): resolved by ``utils.device.as_device`` when the context is made."""
    num_workers: int = 0
    """Processes that load image batches ahead of the step (``data.num_workers``); 0 = in the step. Same batches."""
    pin_memory: bool = True

    def __post_init__(self) -> None:
        self.device = as_device(self.device)
        if self.cache is None:
            self.data = prefetching(self.data, self.num_workers, self.pin_memory)

    def close(self) -> None:
        """Stop the data workers, if any (a later batch starts them again)."""
        getattr(self.data, "close", lambda: None)()

    @torch.no_grad()
    def __call__(self, start: int, n: int) -> DiffusionBatch:
        gens = [sample_generator(self.seed, self.stream, i) for i in range(start, start + n)]
        if self.cache is not None:
            mean, std, text, captions = self.cache.samples(start, n)
        else:
            images, captions = self.data.samples(start, n)
            vae = self.components.vae
            dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
            mean, std = dist.mean, dist.std
            text = encode_prompts(self.components, captions)
        latents, noise, t = posterior_draws(mean, std, gens, self.components.vae.config.scaling_factor,
                                            self.num_train_timesteps)
        return DiffusionBatch(latents.to(self.device), text.to(self.device), noise.to(self.device),
                              t.to(self.device), list(captions))


def held_out_batch(inputs: InputBuilder, seed: int, n: int) -> DiffusionBatch:
    """``n`` fixed held-out samples of a run seeded ``seed``: the data, model and timestep range of ``inputs``, their
    own seed (seed + 1), stream and indices, and VAE latents (never a latent cache), so no step trains on them."""
    return replace(inputs, seed=seed + 1, stream=HELD_OUT_STREAM, cache=None)(HELD_OUT_START, n)
