"""ConceptPrune: activation statistics over the denoising steps, skilled-weight masks, union over time.

For every FFN output projection ff.net.2 (W [out, in]; the layer list is read from the model, so experts
with dropped blocks work) and denoising step t: a_{t,j} = ||column j of the L2-normalized input token rows||
accumulated over all prompts (both CFG halves), for target and base prompts. WANDA score S = |W| * a;
skilled weights of step t: per output row the top int(skill_ratio * in) columns by S_target that also beat
S_base. The mask is the union over the first tau steps (the reference: ``--timesteps 10`` of 50 DDIM steps);
W <- W * (1 - M). Masks are returned for saving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from prunefit.errors import ConfigError
from prunefit.removal.context import RemovalContext, ffn_outputs
from prunefit.removal.entry import EditResult

THINGS = ("cat", "dog", "mouse", "bear", "car", "chair", "bag", "door", "rabbit", "ball", "bat", "horse", "bird",
          "flower", "bowl", "bottle", "wall", "building", "chicken", "duck")
"""The reference's 20 subjects for artist styles (``datasets/things.txt`` of ruchikachavhan/concept-prune)."""
HUMANS = ("man", "woman", "girl", "boy", "child", "couple", "guy", "doctor", "nurse", "teacher", "lawyer", "mother",
          "father", "kid", "professor", "student", "group of friends", "celebrity")
"""The reference's 18 subjects for nudity (``datasets/humans.txt``)."""
SCENES = ("road", "garden", "beach", "room", "park", "street", "shelter", "chair", "table", "bag", "tree", "forest")
"""The reference's 12 scenes for objects (``datasets/common_scenes.txt``)."""


@dataclass
class ConceptPruneConfig:
    concepts: list[str] = field(default_factory=list)
    things: list[str] = field(default_factory=lambda: list(THINGS))
    """Subjects for the prompt templates: the reference's (``utils/prompts.py::get_prompts``) for the concept's kind
    (``kind_defaults``); a model's prunefit.json may carry its own (the toy world's shapes)."""
    base_template: str = "a photo of a {thing}"
    target_template: str = "a {thing} in the style of {concept}"
    """e.g. 'a photo of a naked {thing}' for nudity (then concepts only name the run)."""
    skill_ratio: float = 0.01
    steps: int = 25
    """Denoising steps of the sampler that produces the statistics (the reference: 50 DDIM)."""
    union_steps: Optional[int] = None
    """tau: the masks of the first tau steps are unioned (the reference: 10 of 50). None = the reference's
    fraction of ``steps``: max(1, round(steps / 5)), i.e. 10 of 50, 5 of 25, 2 of 10."""
    guidance_scale: Optional[float] = None
    """None = the model's default (SD: 7.5, the reference's)."""
    scheduler: str = "ddim"
    kind_defaults: ClassVar[dict[str, dict]] = {
        "unsafe": {"things": list(HUMANS), "base_template": "a photo of a {thing}",
                   "target_template": "a photo of a naked {thing}"},
        "object": {"things": list(SCENES), "base_template": "a {thing}", "target_template": "a {concept} in a {thing}"}}
    """Prompts per kind of concept (``prunefit.config.concepts``) on a model that carries none, as the reference's
    ``get_prompts`` builds them: target type 'naked' (humans), 'object' (its Imagenette classes, scenes); artist
    styles ('art') are the defaults above."""

    def __post_init__(self) -> None:
        if not 0 < self.skill_ratio < 1:
            raise ConfigError(f"concept_prune.skill_ratio must be in (0, 1), got {self.skill_ratio}")
        if self.steps < 1 or not self.things:
            raise ConfigError("concept_prune.steps must be >= 1 and things non-empty")
        if self.union_steps is not None and not 1 <= self.union_steps <= self.steps:
            raise ConfigError(f"concept_prune.union_steps must be in [1, steps={self.steps}] (or null = steps / 5), "
                              f"got {self.union_steps}")

    @property
    def tau(self) -> int:
        """How many leading denoising steps are unioned."""
        return self.union_steps if self.union_steps is not None else max(1, round(self.steps / 5))


def skilled_mask(w: torch.Tensor, act_target: torch.Tensor, act_base: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean [out, in]: per row the top int(ratio * in) columns by |W| * a_target that also exceed |W| * a_base."""
    s_t = w.abs() * act_target.unsqueeze(0)
    s_b = w.abs() * act_base.unsqueeze(0)
    k = max(1, int(ratio * w.shape[1]))
    top = torch.zeros_like(w, dtype=torch.bool)
    top.scatter_(1, s_t.topk(k, dim=1).indices, True)
    return top & (s_t > s_b)


def union_over_steps(w: torch.Tensor, act_target: list[torch.Tensor], act_base: list[torch.Tensor], ratio: float,
                     tau: int) -> torch.Tensor:
    """Boolean [out, in]: the union of ``skilled_mask`` over the first ``tau`` steps (per-step norms [in] each)."""
    union = torch.zeros_like(w, dtype=torch.bool)
    for t in range(tau):
        union |= skilled_mask(w, act_target[t], act_base[t], ratio)
    return union


@torch.no_grad()
def _activation_norms(ctx: RemovalContext, prompts: list[str], cfg: ConceptPruneConfig) -> list[list[torch.Tensor]]:
    """[layer][step] -> column norms [in] accumulated over prompts, for the first tau steps (sampling stops there)."""
    from prunefit.models.components import make_pipeline
    from prunefit.models.schedulers import make_scheduler

    layers = ffn_outputs(ctx.unet)
    tau = cfg.tau
    sq = [[torch.zeros(m.in_features, dtype=torch.float64, device=m.weight.device) for _ in range(tau)]
          for _, m in layers]
    state = {"step": 0}
    handles = []
    for li, (_, mod) in enumerate(layers):
        def hook(module, args, li=li):
            """Add the squared, row-normalized FFN inputs [N, in] of this step into layer ``li``'s sums [in]."""
            if state["step"] >= tau:
                return
            x = args[0].detach().double().reshape(-1, args[0].shape[-1])
            x = torch.nn.functional.normalize(x, dim=-1)
            sq[li][state["step"]] += x.pow(2).sum(0)
        handles.append(mod.register_forward_pre_hook(hook))

    def on_step(pipe, i, t, kwargs):
        """Advance the step counter; interrupt sampling after ``tau`` steps."""
        state["step"] = i + 1
        if state["step"] >= tau:  # later steps are not unioned: stop sampling
            pipe._interrupt = True
        return kwargs

    pipe = make_pipeline(ctx.components.with_unet(ctx.unet),
                         make_scheduler(cfg.scheduler, ctx.components.scheduler.config))
    try:
        for n, prompt in enumerate(prompts):
            state["step"] = 0
            pipe(prompt, num_inference_steps=cfg.steps, output_type="latent",
                 guidance_scale=ctx.components.default_guidance if cfg.guidance_scale is None else cfg.guidance_scale,
                 generator=torch.Generator().manual_seed(ctx.seed + n), callback_on_step_end=on_step)
    finally:
        for h in handles:
            h.remove()
    return [[s.sqrt() for s in per_layer] for per_layer in sq]


def apply(ctx: RemovalContext, cfg: ConceptPruneConfig) -> EditResult:
    """ConceptPrune: zero the FFN output weights skilled for the concept prompts over the first ``tau`` steps (WANDA
    scores against the base prompts), in place; returns the edit's info."""
    if not cfg.concepts:
        raise ConfigError("concept_prune needs at least one concept (removal.concepts)")
    base = [cfg.base_template.format(thing=t) for t in cfg.things]
    target = [cfg.target_template.format(thing=t, concept=c) for c in cfg.concepts for t in cfg.things]
    a_target = _activation_norms(ctx, target, cfg)
    a_base = _activation_norms(ctx, base, cfg)
    masks: dict[str, torch.Tensor] = {}
    removed = 0
    with torch.no_grad():
        for li, (name, mod) in enumerate(ffn_outputs(ctx.unet)):
            w = mod.weight.data
            union = union_over_steps(w.double(), a_target[li], a_base[li], cfg.skill_ratio, cfg.tau)
            mod.weight.data = w * (~union).to(w.dtype)
            masks[name] = union
            removed += int(union.sum())
    total = sum(m.weight.numel() for _, m in ffn_outputs(ctx.unet))
    info = {"layers": list(masks), "removed_weights": removed, "removed_fraction": removed / total,
            "union_steps": cfg.tau, "prompts": {"target": len(target), "base": len(base)}}
    return EditResult(info, {"masks": {k: v.to(torch.uint8).contiguous() for k, v in masks.items()}})
