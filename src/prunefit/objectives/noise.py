"""Forward diffusion and per-sample latent draws, written once for every objective, method and recipe.

Shapes: latents and noise [B, C, h, w]; ``alphas_cumprod`` [T] (the training scheduler's cumulative products);
timesteps [B] (long, in [0, T)). ``add_noise`` gives the same tensor as diffusers' ``DDPMScheduler.add_noise``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def add_noise(latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps, DDPM's q(x_t | x_0), in the latents' dtype and device.
    latents, noise [B, C, h, w]; alphas_cumprod [T]; timesteps [B] -> x_t [B, C, h, w]."""
    a = alphas_cumprod.to(latents.device, latents.dtype)[timesteps.to(latents.device)]
    a = a.view(-1, *([1] * (latents.dim() - 1)))
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def posterior_draws(mean: torch.Tensor, std: torch.Tensor, generators: Sequence[torch.Generator],
                    scaling_factor: float, num_train_timesteps: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents, noise, timesteps) of B samples, sample i drawn from ``generators[i]`` alone (in that order: the
    VAE posterior's eps, the diffusion noise, then t), so a batch equals its pieces drawn one by one.

    ``mean`` / ``std`` [B, C, h, w] are the VAE posterior's; latents = (mean + std * eps) * scaling_factor. Draws
    happen on each generator's device (a seed gives the same numbers on any device); results are on ``mean``'s.
    """
    shape = mean.shape[1:]

    def normal(g: torch.Generator) -> torch.Tensor:
        """Standard normal noise of one sample's shape [C, h, w], drawn on ``g``'s device."""
        return torch.randn(shape, generator=g, device=g.device)

    eps = torch.stack([normal(g) for g in generators]).to(mean.device, mean.dtype)
    noise = torch.stack([normal(g) for g in generators]).to(mean.device, mean.dtype)
    t = torch.cat([torch.randint(0, num_train_timesteps, (1,), generator=g, device=g.device) for g in generators])
    return (mean + std * eps) * scaling_factor, noise, t.to(mean.device)
