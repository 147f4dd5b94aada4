"""APTP's router objective: denoising, output and feature distillation, contrastive and resource losses of the
gated UNet for a batch of samples, with the ungated UNet as the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import DDPMScheduler

from prunefit.config.schema import PruneConfig
from prunefit.losses.aptp import contrastive_loss, resource_loss, straight_through_hard
from prunefit.losses.diffusion import diffusion_target, min_snr_weights, snr, weighted_mse
from prunefit.losses.distillation import feature_kd, output_kd
from prunefit.models.components import Components, encode_images, encode_prompts
from prunefit.models.features import capture_features
from prunefit.objectives.base import LossOutput
from prunefit.objectives.noise import add_noise
from prunefit.pruning.gating import gated
from prunefit.pruning.macs import MacModel
from prunefit.pruning.router import Router
from prunefit.pruning.spec import GateSpec


@dataclass
class RouterObjective:
    """APTP's loss for samples [start, start + n): the UNet is frozen; the router's predictor and codebook
    learn from denoising, distillation, contrastive and resource losses; the teacher is the same UNet
    without gates. Routing marginals (Sinkhorn) are summed over all processes when ``distributed``."""

    cfg: PruneConfig
    comps: Components
    spec: GateSpec
    macs: MacModel
    router: Router
    encoder: object
    data: object
    distributed: bool = False
    uses_step: ClassVar[bool] = True  # the loop passes the phase step (for the pre-training switch)

    def __post_init__(self) -> None:
        self.noise_sched = DDPMScheduler.from_config(self.comps.scheduler.config)
        self.acp = self.noise_sched.alphas_cumprod

    def __call__(self, start: int, n: int, step: int) -> LossOutput:
        cfg, comps, unet, acp = self.cfg, self.comps, self.comps.unet, self.acp
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start)
        images, captions = self.data.samples(start, n)
        with torch.no_grad():
            latents = encode_images(comps, images, gen)
            text = encode_prompts(comps, captions)
            z = self.encoder(captions).to(latents.device)
            noise = torch.randn(latents.shape, generator=gen, device=gen.device).to(latents.device)
            t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (len(latents),),
                              generator=gen, device=gen.device).to(latents.device)
            noisy = add_noise(latents, noise, acp, t)
            with capture_features(unet) as feats_t:
                out_t = unet(noisy, t, text).sample
        s, zq, idx = self.router.route_train(z, gen, distributed=self.distributed)
        arch = s if step < cfg.hypernet_pretrain_steps else zq
        with gated(unet, self.spec, arch), capture_features(unet) as feats_s:
            out_s = unet(noisy, t, text).sample
        target = diffusion_target(comps.prediction_type, latents, noise, acp, t)
        parts = {
            "ddpm": weighted_mse(out_s, target,
                                 min_snr_weights(snr(acp, t), cfg.min_snr_gamma, comps.prediction_type)),
            "output_kd": output_kd(out_s, out_t),
            "feature_kd": feature_kd(feats_s, feats_t),
            "contrastive": contrastive_loss(self.router.normalized(s), z),
        }
        ratio = self.macs.ratio(straight_through_hard(arch))
        parts["resource"] = resource_loss(ratio, cfg.target, cfg.resource_loss)
        parts["std"] = -ratio.std() if len(ratio) > 1 else ratio.sum() * 0
        parts["max"] = 1 - ratio.max()
        total = sum(getattr(cfg.loss, k) * v for k, v in parts.items())
        parts["mac_ratio"] = ratio.mean().detach()
        loads = torch.bincount(idx, minlength=cfg.num_experts)
        parts.update({f"load_{k}": loads[k].float() for k in range(cfg.num_experts)})
        return LossOutput(total, parts)
