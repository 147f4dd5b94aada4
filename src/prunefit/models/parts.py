"""The ``Components`` of an SD pipeline (its own module so ``tiny`` builds them without importing the loaders)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

DEFAULT_GUIDANCE = 7.5
"""The paper's classifier-free guidance scale for SD (PNDM 25 steps, CFG 7.5)."""


@dataclass
class Components:
    """The parts of an SD pipeline, plus where they came from (recorded in manifests and results)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    source: str
    default_guidance: float = DEFAULT_GUIDANCE
    """Guidance scale used when a sampler leaves it unset (a pipeline folder's prunefit.json may set it)."""
    method_defaults: dict = field(default_factory=dict)
    """Removal-method settings that work on this model (prunefit.json's ``method_defaults``: ``methods`` -> section
    -> key -> value, ``concepts`` -> concept -> section -> key -> value); {} = the methods' own (the papers')."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side: 2 ** (VAE levels - 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """The image size the UNet was trained at: its sample size x the VAE scale factor."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts, from the scheduler config: 'epsilon' (default) or 'v_prediction'."""
        return self.scheduler.config.get("prediction_type", "epsilon")

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "Components":
        """Move the UNet, VAE and text encoder to ``device`` (and ``dtype``) in place where they differ; returns self.
        """
        for m in (self.unet, self.vae, self.text_encoder):
            if m.device != torch.device(device) or (dtype is not None and m.dtype != dtype):
                m.to(device=device, dtype=dtype)
        return self

    def with_unet(self, unet: Any, source: str | None = None) -> "Components":
        """The same components with another UNet (an expert, an erased copy)."""
        return replace(self, unet=unet, source=source or self.source)
