"""UNet input builders: fixed random latents, timesteps and text states for counting and timing a UNet."""

from __future__ import annotations

import torch


def unet_inputs(unet, batch: int, latent_size: int, text_length: int, dtype=torch.float32, device="cpu"):
    """Random UNet inputs: latents [B, C, h, w], timesteps [B], text states [B, L, cross_attention_dim]."""
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    sample = torch.randn(batch, cfg.in_channels, latent_size, latent_size, generator=g).to(device, dtype)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    text = torch.randn(batch, text_length, cfg.cross_attention_dim, generator=g).to(device, dtype)
    return sample, t, text
