"""Diffusion training targets and weights: epsilon / v targets, SNR, and min-SNR-gamma weighting.

References: Ho et al. 2020 (DDPM, epsilon target); Salimans & Ho 2022 (v-prediction);
Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy" (weights below).
"""

from __future__ import annotations

import torch


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) per sample. [T], [B] -> [B]."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1.0 - a)


def diffusion_target(prediction_type: str, latents: torch.Tensor, noise: torch.Tensor,
                     alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: ``noise`` (epsilon) or v = sqrt(a) * noise - sqrt(1 - a) * x0.

    latents, noise: [B, C, H, W]; timesteps: [B] -> [B, C, H, W].
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod.to(latents.device)[timesteps].float().view(-1, 1, 1, 1)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'")


def min_snr_weights(snr_t: torch.Tensor, gamma: float, prediction_type: str, formula: str = "paper") -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma. [B] -> [B].

    ``formula="paper"`` (Hang et al.; current diffusers): epsilon: min(snr, g) / snr; v: min(snr, g) / (snr + 1).
    ``formula="legacy"`` (the official APTP code, ``Pruner.step`` / ``UnetFineTuner.step``, after an old diffusers
    example): epsilon as above; v: snr' = snr + 1, then min(snr', g) / snr'. The two v forms agree for
    snr + 1 >= g and differ below: at snr 0.25, g 5 the paper gives 0.2, the legacy form 1.0.
    """
    if formula not in ("paper", "legacy") or prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"unknown min-SNR formula {formula!r} / prediction_type {prediction_type!r}")
    g = torch.full_like(snr_t, gamma)
    if prediction_type == "epsilon":
        return torch.minimum(snr_t, g) / snr_t
    if formula == "legacy":
        shifted = snr_t + 1
        return torch.minimum(shifted, g) / shifted
    return torch.minimum(snr_t, g) / (snr_t + 1)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all elements of per-sample-weighted squared error. [B, ...] x2, [B] -> scalar."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()
