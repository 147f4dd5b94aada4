"""AdvUnlearn as a training phase.

Inner attack (``attack_steps`` signed-gradient steps of size ``attack_lr``, within an L_inf ball of
``attack_eps``): a perturbation delta of the concept prompt's text states that makes the edited model
regenerate the concept again, i.e. minimizes ||eps_theta(x_t, c + delta) - eps*(x_t, c)||^2.
Outer step: the ESD target on the attacked prompt, ||eps_theta(x_t, c + delta) - [eps*(x_t, "") -
eta (eps*(x_t, c) - eps*(x_t, ""))]||^2, plus ``retain_weight`` * ||eps_theta(x_t, r) - eps*(x_t, r)||^2
on retain prompts r. ``target='text_encoder'`` trains the text encoder instead of the UNet (the
reference's recommended setting for SD); the attack then perturbs the token embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from prunefit.errors import ConfigError
from prunefit.losses.guidance import negative_guidance_target
from prunefit.objectives.base import LossOutput
from prunefit.objectives.inputs import sample_generator
from prunefit.removal.context import RemovalContext, concept_from_index, param_subset
from prunefit.removal.esd.method import ESDConfig, ESDObjective
from prunefit.training.loop import Phase


@dataclass
class AdvUnlearnConfig:
    concepts: list[str] = field(default_factory=list)
    retain_prompts: list[str] = field(default_factory=lambda: [
        "a red circle on a black background", "a blue square on a white background",
        "a green triangle on a gray background", "a yellow star on a black background"])
    """Prompts whose outputs must not change (the reference: COCO-like captions)."""
    target: str = "unet"
    """unet or text_encoder."""
    train_method: str = "xattn"
    """UNet parameter subset when target=unet (xattn, noxattn, selfattn, full)."""
    eta: float = 1.0
    lr: float = 1e-5
    iterations: int = 1000
    batch_size: int = 1
    attack_steps: int = 5
    attack_lr: float = 1e-2
    attack_eps: float = 0.5
    retain_weight: float = 1.0
    xt_source: str = "model"
    ddim_steps: int = 50
    start_guidance: float = 3.0
    concept_images: Optional[str] = None

    def __post_init__(self) -> None:
        if self.target not in ("unet", "text_encoder"):
            raise ConfigError(f"advunlearn.target must be unet or text_encoder, got {self.target!r}")
        if self.attack_steps < 0 or self.attack_lr <= 0 or self.attack_eps <= 0 or self.retain_weight < 0:
            raise ConfigError("advunlearn: attack_steps >= 0, attack_lr > 0, attack_eps > 0, retain_weight >= 0")
        self.esd_config()  # validates the shared ESD settings

    def esd_config(self) -> ESDConfig:
        """The ESD settings AdvUnlearn's outer step shares (x_t source, DDIM rollout, eta, parameter subset)."""
        return ESDConfig(self.concepts, self.train_method, self.eta, self.lr, self.iterations, self.batch_size,
                         self.xt_source, self.ddim_steps, self.start_guidance, self.concept_images)


@dataclass
class AdvUnlearnObjective:
    ctx: RemovalContext
    student: torch.nn.Module
    cfg: AdvUnlearnConfig
    stream: int = 17

    def __post_init__(self) -> None:
        self.esd = ESDObjective(self.ctx, self.student, self.cfg.esd_config(), self.stream)

    def text(self, prompt: str) -> torch.Tensor:
        """Concept text states; with target=text_encoder they carry the encoder's gradients."""
        if self.cfg.target == "text_encoder":
            from prunefit.models.components import encode_prompts

            return encode_prompts(self.ctx.components, [prompt])
        return self.esd.text(prompt)

    def attack(self, x, t, cond: torch.Tensor, clean_ref: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros_like(cond, requires_grad=True)
        for _ in range(self.cfg.attack_steps):
            pred = self.student(x, t, (cond.detach() + delta).expand(len(x), -1, -1)).sample
            loss = F.mse_loss(pred.float(), clean_ref.float())
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta -= self.cfg.attack_lr * grad.sign()
                delta.clamp_(-self.cfg.attack_eps, self.cfg.attack_eps)
        return delta.detach()

    def __call__(self, start: int, n: int) -> LossOutput:
        gens = [sample_generator(self.ctx.seed, self.stream, i) for i in range(start, start + n)]
        concept = concept_from_index(self.cfg.concepts, start)
        clean = self.esd.text(concept)
        if self.cfg.xt_source == "model":
            x, t = self.esd._xt_from_model(gens, clean, n)
        else:
            x, t = self.esd._xt_from_images(start, n, gens)
        empty = self.esd.empty.expand(n, -1, -1)
        with torch.no_grad():
            ref = self.ctx.frozen(torch.cat([x, x]), torch.cat([t, t]),
                                  torch.cat([empty, clean.expand(n, -1, -1)])).sample
            e_neu, e_pos = ref.chunk(2)
            target = negative_guidance_target(e_neu, e_pos, self.cfg.eta)
        delta = self.attack(x, t, clean, e_pos)
        cond = self.text(concept) + delta
        unlearn = F.mse_loss(self.student(x, t, cond.expand(n, -1, -1)).sample.float(), target.float())
        retain_prompt = self.cfg.retain_prompts[start % len(self.cfg.retain_prompts)]
        r_clean = self.esd.text(retain_prompt)
        with torch.no_grad():
            r_ref = self.ctx.frozen(x, t, r_clean.expand(n, -1, -1)).sample
        retain = F.mse_loss(self.student(x, t, self.text(retain_prompt).expand(n, -1, -1)).sample.float(),
                            r_ref.float())
        total = unlearn + self.cfg.retain_weight * retain
        return LossOutput(total, {"unlearn": unlearn, "retain": retain, "attack_norm": delta.abs().max()})


def build_phase(ctx: RemovalContext, cfg: AdvUnlearnConfig, name: str = "advunlearn", every: int = 1,
                lr: Optional[float] = None, student: Optional[torch.nn.Module] = None,
                freeze_others: bool = True) -> Phase:
    """The method's phase. ``freeze_others=False`` leaves other parameters trainable (bilevel: the lower
    phase trains them); the phase's optimizer still updates only the method's parameter subset."""
    if not cfg.concepts:
        raise ConfigError("advunlearn needs at least one concept (removal.concepts)")
    model = student if student is not None else ctx.unet
    if freeze_others:
        for p in model.parameters():
            p.requires_grad_(False)
    if cfg.target == "unet":
        params = [p for _, p in param_subset(getattr(model, "module", model), cfg.train_method)]
    else:
        te = ctx.components.text_encoder
        params = list(te.parameters())
    for p in params:
        p.requires_grad_(True)
    lr = lr or cfg.lr
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return Phase(name, AdvUnlearnObjective(ctx, model, cfg), opt, params, lr, every=every,
                 micro_batch=cfg.batch_size, model=model)
