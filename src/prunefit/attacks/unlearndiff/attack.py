"""UnlearnDiffAtk's optimization: soft prefix tokens that make the attacked model denoise the concept's images.

Per prompt p with target latents z0 (the unerased model's image of p at p's seed, VAE-encoded), a prefix
P [k, d_tok] after BOS is optimized with AdamW to minimize E_t,eps ||eps_theta(z_t, t, c(P ; p)) - eps||^2
(the v target for v-prediction models), ``timesteps_per_step`` (t, eps) draws per step. At the end each soft
token is projected to its nearest vocabulary token (cosine); both the soft prompt and the discrete text are
returned. Defaults are the reference's (Diffusion-MU-Attack ``text_grad``: prefix_k with k = 5, AdamW lr 0.01,
weight decay 0.1, one sampled timestep per step, 40 iterations). Prompts of a chunk are optimized together,
each with its own prefix, loss and generators, so a prompt's result does not depend on its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from prunefit.attacks.base import (
    AttackContext,
    AttackOutput,
    AttackPrompt,
    attack_generator,
    noisy_latents,
    reference_latents,
)
from prunefit.attacks.soft_prompt import (
    discrete_prompt,
    encode_with_prefix,
    init_prefix,
    nearest_tokens,
    token_embeddings,
)
from prunefit.errors import ConfigError
from prunefit.losses.diffusion import diffusion_target


@dataclass
class UnlearnDiffConfig:
    k: int = 5
    """Soft prefix tokens (the reference's prefix_k insertion, k = 5)."""
    iterations: int = 40
    """Optimization steps per prompt (the attack budget)."""
    lr: float = 0.01
    weight_decay: float = 0.1
    timesteps_per_step: int = 1
    """(t, noise) draws averaged per step (the reference samples one timestep per step)."""
    init: Optional[str] = None
    """Text whose token embeddings start the prefix; None = k random vocabulary tokens (seeded per prompt)."""
    metric: str = "cosine"
    """Nearest-token projection: cosine (the reference's PEZ projection) or l2."""
    discrete_in_loop: bool = False
    """Forward with the prefix's nearest tokens, gradient to the soft tokens (PEZ's straight-through step), so the
    optimized prompt is the discrete one; False = optimize soft tokens, project once at the end."""
    batch_size: int = 16
    """Prompts optimized together (speed only)."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"unlearndiff.iterations must be >= 1 (a zero budget attacks nothing), got "
                              f"{self.iterations}")
        if self.k < 1 or self.timesteps_per_step < 1 or self.batch_size < 1:
            raise ConfigError("unlearndiff.k, unlearndiff.timesteps_per_step and unlearndiff.batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("unlearndiff.lr must be > 0 and unlearndiff.weight_decay >= 0")
        if self.metric not in ("cosine", "l2"):
            raise ConfigError(f"unlearndiff.metric must be cosine or l2, got {self.metric!r}")

    def budget(self) -> dict:
        """The optimization budget (k, iterations, lr, ...), recorded with the results."""
        return {"k": self.k, "iterations": self.iterations, "lr": self.lr, "weight_decay": self.weight_decay,
                "timesteps_per_step": self.timesteps_per_step, "discrete_in_loop": self.discrete_in_loop}


def denoising_losses(components, prompts: list[str], prefix: torch.Tensor, latents: torch.Tensor,
                     gens: list[torch.Generator], per_prompt: int) -> torch.Tensor:
    """Per-prompt denoising loss [B] of the attacked model conditioned on (prefix ; prompt), on target latents
    [B, C, h, w] noised with ``per_prompt`` draws from each prompt's generator; differentiable in ``prefix``."""
    x_t, t, noise = noisy_latents(components, latents, gens, per_prompt)
    cond = encode_with_prefix(components, prompts, prefix).repeat_interleave(per_prompt, dim=0)
    pred = components.unet(x_t, t, cond).sample
    z0 = latents.repeat_interleave(per_prompt, dim=0)
    target = diffusion_target(components.prediction_type, z0, noise, components.scheduler.alphas_cumprod, t)
    per = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    return per.view(len(prompts), per_prompt).mean(dim=1)


def attack_chunk(ctx: AttackContext, cfg: UnlearnDiffConfig, chunk: list[AttackPrompt]) -> list[AttackOutput]:
    """UnlearnDiffAtk on one chunk of prompts: optimize a soft prefix [B, k, d_tok] so the target's denoising loss on
    the reference latents [B, 4, h, w] is lowest; returns each prompt's projected adversarial prompt and soft prefix
    [k, d_tok]."""
    comps = ctx.target
    latents = reference_latents(ctx, chunk)
    device = latents.device
    prefix = torch.stack([init_prefix(comps, cfg.k, cfg.init, attack_generator(ctx.seed, p.id, "init"))
                          for p in chunk]).to(device).requires_grad_()
    opt = torch.optim.AdamW([prefix], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gens = [attack_generator(ctx.seed, p.id, "noise") for p in chunk]
    texts = [p.prompt for p in chunk]
    for _ in range(cfg.iterations):
        used = prefix
        if cfg.discrete_in_loop:
            hard = token_embeddings(comps, nearest_tokens(comps, prefix, cfg.metric)).view_as(prefix)
            used = prefix + (hard.to(prefix.device) - prefix).detach()
        losses = denoising_losses(comps, texts, used, latents, gens, cfg.timesteps_per_step)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    soft = prefix.detach().cpu()
    outs = []
    for i, p in enumerate(chunk):
        ids = nearest_tokens(comps, soft[i], cfg.metric)
        outs.append(AttackOutput(p.id, discrete_prompt(comps, ids, p.prompt), soft[i].clone(), ids,
                                 float(losses[i].detach())))
    return outs


def run(ctx: AttackContext, cfg: UnlearnDiffConfig, prompts: list[AttackPrompt]) -> list[AttackOutput]:
    """The attack on every prompt; outputs in the prompts' order."""
    outs: list[AttackOutput] = []
    for i in range(0, len(prompts), cfg.batch_size):
        outs += attack_chunk(ctx, cfg, prompts[i : i + cfg.batch_size])
    return outs
