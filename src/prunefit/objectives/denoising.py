"""The fine-tuning objective (the paper's lower level): DDPM + output distillation + feature distillation.

L = w_ddpm * L_ddpm + w_out * ||s(x_t) - T(x_t)||^2 + w_feat * mean_k ||s_k - T_k||^2 over the 9 block
outputs; defaults 1.0 / 2.0 / 0.1 (paper §C.1.2 and the official both_512 config). The teacher runs once
per step under no_grad, only when a distillation weight is non-zero.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

from prunefit.losses.diffusion import diffusion_target, min_snr_weights, snr, weighted_mse
from prunefit.losses.distillation import feature_kd, output_kd
from prunefit.models.features import capture_features
from prunefit.objectives.base import LossOutput
from prunefit.objectives.inputs import DiffusionBatch, InputBuilder
from prunefit.objectives.noise import add_noise


@dataclass(kw_only=True)
class DenoisingObjective:
    student: torch.nn.Module
    teacher: Optional[torch.nn.Module]
    inputs: InputBuilder
    alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"
    w_ddpm: float = 1.0
    w_output: float = 2.0
    w_feature: float = 0.1
    min_snr_gamma: Optional[float] = 5.0
    min_snr_formula: str = "paper"

    def add_noise(self, b: DiffusionBatch) -> torch.Tensor:
        """The batch's noisy latents x_t [B, 4, h, w] from latents, noise [B, 4, h, w] and timesteps [B]."""
        return add_noise(b.latents, b.noise, self.alphas_cumprod, b.timesteps)

    def loss(self, b: DiffusionBatch) -> LossOutput:
        """w_ddpm * (min-SNR-weighted) DDPM + w_output * output KD + w_feature * feature KD on one batch (latents, noise
        [B, 4, h, w], text [B, L, C], timesteps [B]); returns the total and its parts (scalars)."""
        noisy = self.add_noise(b)
        parts: dict[str, torch.Tensor] = {}
        distil = self.teacher is not None and (self.w_output > 0 or self.w_feature > 0)
        feats_t: list = []
        out_t = None
        if distil:
            out_t, feats_t = self.teacher_forward(noisy, b)
        with (capture_features(_unwrap(self.student)) if distil and self.w_feature > 0 else nullcontext([])) as fs:
            out_s = self.student(noisy, b.timesteps, b.text).sample
        total = out_s.new_zeros((), dtype=torch.float32)
        if self.w_ddpm > 0:
            target = diffusion_target(self.prediction_type, b.latents, b.noise, self.alphas_cumprod, b.timesteps)
            w = None
            if self.min_snr_gamma:
                w = min_snr_weights(snr(self.alphas_cumprod, b.timesteps), self.min_snr_gamma, self.prediction_type,
                                    self.min_snr_formula)
            parts["ddpm"] = weighted_mse(out_s, target, w)
            total = total + self.w_ddpm * parts["ddpm"]
        if distil and self.w_output > 0:
            parts["output_kd"] = output_kd(out_s, out_t)
            total = total + self.w_output * parts["output_kd"]
        if distil and self.w_feature > 0:
            parts["feature_kd"] = feature_kd(list(fs), feats_t)
            total = total + self.w_feature * parts["feature_kd"]
        return LossOutput(total, parts)

    def teacher_forward(self, noisy: torch.Tensor, b: DiffusionBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The frozen teacher's output [B, C, h, w] and block features, in float32. Runs under inference_mode
        (no autograd bookkeeping) in the teacher's own dtype (e.g. bf16 weights: half the memory and faster
        matmuls); results are cloned out of inference mode so the student's losses can save them."""
        dtype = next(self.teacher.parameters()).dtype
        with torch.inference_mode(), (capture_features(self.teacher) if self.w_feature > 0 else nullcontext([])) as ft:
            out = self.teacher(noisy.to(dtype), b.timesteps, b.text.to(dtype)).sample
            feats = list(ft)
        return out.float().clone(), [f.float().clone() for f in feats]

    def __call__(self, start: int, n: int) -> LossOutput:
        return self.loss(self.inputs(start, n))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
