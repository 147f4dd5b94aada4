"""AdvUnlearn (Zhang et al. 2024) as a training phase: unlearning against a prompt attack that adapts.

Inner attack (the reference's ``prefix_k`` attack in word-embedding space): ``attack_tokens`` soft tokens in
the text encoder's token-embedding space, prepended to the prompt right after BOS (``attacks.soft_prompt``),
are optimized by ``attack_steps`` signed-gradient (PGD) steps of ``attack_lr`` so that the edited model
regenerates the concept, i.e. they minimize ||eps_theta(x_t, [p] + c) - eps*(x_t, c)||^2; the perturbation
p - p_0 stays in an L_inf ball of ``attack_eps``. The soft tokens are warm-started from the previous
iteration's (``attack_init='latest'``) and the attack waits ``attack_warmup`` iterations (clean prompts) first.
The reference runs 1,000 iterations, 200 warm-up, 30 PGD steps of 1e-3; ``AdvUnlearnConfig.scaled(n)``
keeps those proportions at a smaller budget (see there).
Outer step: the ESD target on the attacked prompt, ||eps_theta(x_t, [p] + c) - [eps*(x_t, "") -
eta (eps*(x_t, c) - eps*(x_t, ""))]||^2, plus ``retain_weight`` * ||eps_theta(x_t, r) - eps*(x_t, r)||^2 on
retain prompts r. ``target='text_encoder'`` trains the text encoder instead of the UNet (the reference's
recommended setting for SD). The soft tokens live in the objective: a resumed run restarts the attack from
its initial tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from prunefit.attacks.soft_prompt import encode_with_prefix, init_prefix, pgd_step
from prunefit.errors import ConfigError
from prunefit.objectives.base import LossOutput
from prunefit.objectives.inputs import sample_generator
from prunefit.objectives.streams import Stream
from prunefit.removal.context import RemovalContext, concept_from_index, param_subset
from prunefit.removal.esd.method import ESDConfig, ESDObjective
from prunefit.training.loop import Phase, adamw_phase

REFERENCE = {"iterations": 1000, "attack_warmup": 200, "attack_steps": 30, "attack_lr": 1e-3}
"""The reference's budget (AdvUnlearn's released settings)."""

RETAIN_FILE = Path(__file__).with_name("coco_object_retain.csv")
"""The reference's retain set (``--dataset_retain coco_object``), shipped verbatim; its source: the .md beside it."""


@lru_cache(maxsize=1)
def reference_retain_prompts() -> tuple[str, ...]:
    """The 243 prompts of AdvUnlearn's ``coco_object`` retain set, in file order."""
    from prunefit.data.prompts import read_prompt_file

    return tuple(r.prompt for r in read_prompt_file(RETAIN_FILE))


@dataclass
class AdvUnlearnConfig(ESDConfig):
    """ESD's settings (the outer unlearning step: x_t source, DDIM rollout, eta, parameter subset, budget) plus the
    attack's and the retain loss's."""

    retain_prompts: list[str] = field(default_factory=lambda: list(reference_retain_prompts()))
    """Prompts whose outputs must not change: the reference's retain set (``coco_object_retain.csv``, 243 "a photo
    of {object}" prompts; a model's prunefit.json may carry its own, e.g. the toy world's captions); the retain
    term is ESD's (``ESDObjective.retain_term``), on by default here."""
    target: str = "unet"
    """unet or text_encoder (train_method picks the UNet parameter subset when target=unet)."""
    attack_tokens: int = 1
    """k soft prefix tokens (the reference: one adversarial token)."""
    attack_steps: int = 30
    attack_lr: float = 1e-3
    attack_eps: float = 0.5
    """L_inf radius of the soft tokens' perturbation from their initial embeddings."""
    attack_warmup: int = 200
    """Iterations with clean prompts before the attack starts."""
    attack_init: str = "latest"
    """latest: warm-start each attack from the previous iteration's tokens; random: fresh tokens every time."""
    retain_weight: float = 1.0
    section: ClassVar[str] = "advunlearn"

    def __post_init__(self) -> None:
        super().__post_init__()  # ESD's shared settings
        if self.target not in ("unet", "text_encoder"):
            raise ConfigError(f"advunlearn.target must be unet or text_encoder, got {self.target!r}")
        if (self.attack_steps < 0 or self.attack_lr <= 0 or self.attack_eps <= 0 or self.retain_weight < 0
                or self.attack_tokens < 1 or self.attack_warmup < 0):
            raise ConfigError("advunlearn: attack_steps >= 0, attack_lr > 0, attack_eps > 0, retain_weight >= 0, "
                              "attack_tokens >= 1, attack_warmup >= 0")
        if self.attack_init not in ("latest", "random"):
            raise ConfigError(f"advunlearn.attack_init must be latest or random, got {self.attack_init!r}")

    def scaled(self, iterations: int) -> "AdvUnlearnConfig":
        """The reference's attack schedule at ``iterations``: warm-up 20% of the iterations; PGD steps 30 x
        iterations / 1000 (at least 1); step size so that steps x lr stays the reference's 0.03 per iteration
        (warm-started, the perturbation then reaches eps after about eps / 0.03 attacked iterations, as at 1,000)."""
        steps = max(1, round(REFERENCE["attack_steps"] * iterations / REFERENCE["iterations"]))
        reach = REFERENCE["attack_steps"] * REFERENCE["attack_lr"]
        warmup = round(iterations * REFERENCE["attack_warmup"] / REFERENCE["iterations"])
        return dataclasses.replace(self, iterations=iterations, attack_steps=steps, attack_lr=reach / steps,
                                   attack_warmup=warmup)


@dataclass
class AdvUnlearnObjective:
    ctx: RemovalContext
    student: torch.nn.Module
    cfg: AdvUnlearnConfig
    stream: int = Stream.ADVUNLEARN

    def __post_init__(self) -> None:
        self.esd = ESDObjective(self.ctx, self.student, self.cfg.esd_config(), self.stream)
        self.calls = 0
        self.origin: dict[str, torch.Tensor] = {}
        self.prefix: dict[str, torch.Tensor] = {}

    def encode(self, prompts: list[str], prefix: Optional[torch.Tensor]) -> torch.Tensor:
        """Text states [B, L, D] of ``prompts`` (after ``prefix`` [k, d_tok] or [B, k, d_tok]); with
        target=text_encoder they carry its gradients."""
        if self.cfg.target == "text_encoder":
            return encode_with_prefix(self.ctx.components, prompts, prefix)
        with torch.no_grad():
            return encode_with_prefix(self.ctx.components, prompts, prefix).to(self.ctx.device)

    def _start(self, concept: str) -> torch.Tensor:
        if concept not in self.origin or self.cfg.attack_init == "random":
            g = sample_generator(self.ctx.seed, Stream.ATTACK_INIT, self.calls)
            self.origin[concept] = init_prefix(self.ctx.components, self.cfg.attack_tokens, generator=g)
            self.prefix[concept] = self.origin[concept].clone()
        return self.prefix[concept]

    def attack(self, concept: str, prompts: list[str], x, t, clean_ref: torch.Tensor) -> torch.Tensor:
        """PGD on the soft prefix: the edited model's prediction on [p] + prompt pulled to the frozen model's
        prediction on the clean prompt. Returns the new prefix (detached; also kept for the warm start)."""
        p = self._start(concept)
        n = len(x)
        for _ in range(self.cfg.attack_steps):
            p = p.detach().requires_grad_(True)
            cond = encode_with_prefix(self.ctx.components, prompts, p)
            pred = self.student(x, t, cond.expand(n, -1, -1)).sample
            (grad,) = torch.autograd.grad(F.mse_loss(pred.float(), clean_ref.float()), p)
            p = pgd_step(p, grad, self.cfg.attack_lr, origin=self.origin[concept], eps=self.cfg.attack_eps)
        self.prefix[concept] = p.detach()
        return self.prefix[concept]

    def __call__(self, start: int, n: int) -> LossOutput:
        gens = [sample_generator(self.ctx.seed, self.stream, i) for i in range(start, start + n)]
        concept = concept_from_index(self.cfg.concepts, start)
        if self.cfg.xt_source == "model":
            prompts = [concept]
            x, t = self.esd.xt_from_model(gens, self.esd.text(concept), n)
        else:
            x, t, captions = self.esd.xt_from_images(start, n, gens)
            prompts = captions if self.cfg.condition == "caption" else [concept]
        clean = self.ctx.text(prompts)
        target, e_pos = self.esd.targets(x, t, clean)
        attacking = self.calls >= self.cfg.attack_warmup and self.cfg.attack_steps > 0
        prefix = self.attack(concept, prompts, x, t, e_pos) if attacking else None
        self.calls += 1
        cond = self.encode(prompts, prefix)
        unlearn = F.mse_loss(self.student(x, t, cond.expand(n, -1, -1)).sample.float(), target.float())
        retain_prompt = self.esd.retain_prompt(start)
        retain = self.esd.retain_term(x, t, retain_prompt, self.encode([retain_prompt], None))
        total = unlearn + self.cfg.retain_weight * retain
        norm = (prefix - self.origin[concept]).abs().max() if prefix is not None else total.new_zeros(())
        return LossOutput(total, {"unlearn": unlearn, "retain": retain, "attack_norm": norm})


def build_phase(ctx: RemovalContext, cfg: AdvUnlearnConfig, *, name: str = "advunlearn", every: int = 1,
                lr: Optional[float] = None, student: Optional[torch.nn.Module] = None,
                freeze_others: bool = True, lr_factor=None) -> Phase:
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
    return adamw_phase(name, AdvUnlearnObjective(ctx, model, cfg), params, lr=lr or cfg.lr, model=model,
                       every=every, lr_factor=lr_factor or (lambda step: 1.0), micro_batch=cfg.batch_size)
