"""ESD's objective as a training phase, with an optional retain term (off by default, as in ESD).

ESD (Gandikota et al. 2023) trains eps_theta(x_t, c) towards the negative-guidance target eps*(x_t, "") -
eta (eps*(x_t, c) - eps*(x_t, "")), x_t from k DDIM steps of the edited model on the concept c. It has no
preservation term, so everything the selected parameters also compute drifts (on the toy world ESD-u and ESD-x on
blocky textures raise toy-val FJD; docs/results/erase_defaults_toy.md). ``retain_weight`` > 0 adds AdvUnlearn's
utility-retaining term, retain_weight * ||eps_theta(x_t, r) - eps*(x_t, r)||^2 for one retain prompt r per sample
group (cycled through ``retain_prompts``) at the same x_t; at 0 (the default) the loss is ESD's exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from diffusers import DDIMScheduler

from prunefit.errors import ConfigError
from prunefit.losses.guidance import negative_guidance_target
from prunefit.objectives.base import LossOutput
from prunefit.objectives.inputs import sample_generator
from prunefit.objectives.noise import add_noise, posterior_draws
from prunefit.objectives.streams import Stream
from prunefit.removal.context import RemovalContext, concept_from_index, param_subset
from prunefit.training.loop import Phase, adamw_phase


@dataclass
class ESDConfig:
    concepts: list[str] = field(default_factory=list)
    train_method: str = "xattn"
    """xattn (ESD-x), noxattn (ESD-u), selfattn or full."""
    eta: float = 1.0
    lr: float = 1e-5
    iterations: int = 1000
    batch_size: int = 1
    xt_source: str = "model"
    """model: x_t from k DDIM steps of the edited model (ESD); images: real concept images noised (bilevel code)."""
    ddim_steps: int = 50
    start_guidance: float = 3.0
    """Guidance of the edited model's DDIM rollout that produces x_t."""
    concept_images: Optional[str] = None
    """xt_source=images: an image-caption folder of the concept; None on the toy world = renders of the concept."""
    concept_vocabulary: str = "concept"
    """Toy-world renders: concept (the unsafe object's captions say only the erased concept's word, so training
    never sees the adversarial set's phrasings) or all (every phrasing the teacher knows: the evaluation
    vocabulary leaks into condition=caption; kept to reproduce the archived Pareto cells)."""
    condition: str = "concept"
    """concept: the student and the targets condition on the concept's name (ESD); caption: on each concept
    image's own caption (the official bilevel code's upper step; needs xt_source=images)."""
    retain_prompts: list[str] = field(default_factory=list)
    """Prompts whose predictions the retain term holds to the frozen model's (needed when retain_weight > 0)."""
    retain_weight: float = 0.0
    """Weight of the retain term; 0 = ESD as published (no preservation)."""
    retain_xt: str = "concept"
    """concept: the retain term at the concept's x_t (AdvUnlearn's); own: at x_t from the edited model's rollout on
    the retain prompt itself (k DDIM steps more per iteration)."""
    section: ClassVar[str] = "esd"
    """The config section's name in error messages (methods that extend ESD's settings set their own)."""
    kind_defaults: ClassVar[dict[str, dict]] = {"unsafe": {"train_method": "noxattn"},
                                                "object": {"train_method": "noxattn"}}
    """Settings per kind of concept (``prunefit.config.concepts``) on a model that carries none: the ESD paper's
    ESD-u (every non-cross-attention layer) for nudity and for whole object classes (its object-removal study on
    Imagenette classes), ESD-x (the defaults above) for artist styles."""

    def __post_init__(self) -> None:
        s = self.section
        if self.train_method not in ("xattn", "noxattn", "selfattn", "full"):
            raise ConfigError(f"{s}.train_method must be xattn, noxattn, selfattn or full, got {self.train_method!r}")
        if self.xt_source not in ("model", "images"):
            raise ConfigError(f"{s}.xt_source must be model or images, got {self.xt_source!r}")
        if self.condition not in ("concept", "caption"):
            raise ConfigError(f"{s}.condition must be concept or caption, got {self.condition!r}")
        if self.condition == "caption" and self.xt_source != "images":
            raise ConfigError(f"{s}.condition=caption needs {s}.xt_source=images (captions come with the images)")
        if self.lr <= 0 or self.iterations < 1 or self.batch_size < 1 or self.ddim_steps < 3:
            raise ConfigError(f"{s}: lr must be > 0, iterations and batch_size >= 1, ddim_steps >= 3")
        if self.concept_vocabulary not in ("concept", "all"):
            raise ConfigError(f"{s}.concept_vocabulary must be concept or all, got {self.concept_vocabulary!r}")
        if self.retain_weight < 0:
            raise ConfigError(f"{s}.retain_weight must be >= 0, got {self.retain_weight}")
        if self.retain_xt not in ("concept", "own"):
            raise ConfigError(f"{s}.retain_xt must be concept or own, got {self.retain_xt!r}")

    def check_retain(self) -> None:
        """retain_weight > 0 needs retain prompts. Checked when the phase is built, not in __post_init__: a
        model's carried defaults may supply the prompts after the user's retain_weight was parsed."""
        if self.retain_weight > 0 and not self.retain_prompts:
            s = self.section
            raise ConfigError(f"{s}.retain_weight > 0 needs {s}.retain_prompts (prompts whose outputs must not "
                              f"change), e.g. {s}.retain_prompts='[a photo of a dog]'")

    def esd_config(self) -> "ESDConfig":
        """Just ESD's settings (for a method that extends them and runs ESD's objective)."""
        return ESDConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ESDConfig)})


def ddim_depth(generator: torch.Generator, ddim_steps: int) -> int:
    """How many DDIM steps of the edited model produce ESD's x_t: uniform over every index 0 .. ddim_steps - 1
    (train-esd.py; our first version never drew the first or the last)."""
    return int(torch.randint(0, ddim_steps, (1,), generator=generator, device=generator.device))


@dataclass
class ESDObjective:
    """Loss for samples [start, start + n): all samples of a call share one concept and one DDIM depth k."""

    ctx: RemovalContext
    student: torch.nn.Module
    cfg: ESDConfig
    stream: int = Stream.ESD

    def __post_init__(self) -> None:
        comps = self.ctx.components
        self.ddim = DDIMScheduler.from_config({**comps.scheduler.config, "clip_sample": False,
                                               "set_alpha_to_one": False, "steps_offset": 1})
        self.empty = self.ctx.text([""])
        self._text: dict[str, torch.Tensor] = {}
        self.images = None
        if self.cfg.xt_source == "images":
            self.images = concept_image_source(self.cfg, comps, self.ctx.seed)

    def text(self, prompt: str) -> torch.Tensor:
        """Text-encoder states [1, L, C] of ``prompt``, encoded once and cached."""
        if prompt not in self._text:
            self._text[prompt] = self.ctx.text([prompt])
        return self._text[prompt]

    def xt_from_model(self, gens, cond: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t from k DDIM steps of the edited model itself, k uniform in [0, ddim_steps) as in the reference
        (k = 0: pure noise at the first DDIM timestep); cond [1 or n, L, D] -> (x_t [n, 4, h, w], t [n])."""
        shape = (4, self.ctx.native_latent(), self.ctx.native_latent())
        x = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in gens]).to(self.ctx.device)
        k = ddim_depth(gens[0], self.cfg.ddim_steps)
        self.ddim.set_timesteps(self.cfg.ddim_steps)
        x = x * self.ddim.init_noise_sigma
        ctx_pair = torch.cat([self.empty.expand(n, -1, -1), cond.expand(n, -1, -1)])
        with torch.no_grad():
            for t in self.ddim.timesteps[:k]:
                out = self.student(torch.cat([x, x]), t, ctx_pair).sample
                u, c = out.chunk(2)
                x = self.ddim.step(u + self.cfg.start_guidance * (c - u), t, x).prev_sample
        t = self.ddim.timesteps[k].repeat(n).to(self.ctx.device)
        return x, t

    def xt_from_images(self, start: int, n: int, gens) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Real concept images [start, start + n) encoded and noised at a uniform t: (x_t [n, 4, h, w], t [n],
        captions)."""
        comps = self.ctx.components
        images, captions = self.images.samples(start, n)
        with torch.no_grad():
            dist = comps.vae.encode(images.to(comps.vae.device)).latent_dist
        latents, noise, t = posterior_draws(dist.mean, dist.std, gens, comps.vae.config.scaling_factor,
                                            self.ddim.config.num_train_timesteps)
        x = add_noise(latents, noise, self.ddim.alphas_cumprod, t)
        return x.to(self.ctx.device), t.to(self.ctx.device), list(captions)

    def inputs(self, start: int, n: int, gens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t [n, 4, h, w], t [n], cond) of samples [start, start + n): cond is [1, L, D] for the concept's name
        or [n, L, D] for the images' own captions."""
        concept = concept_from_index(self.cfg.concepts, start)
        if self.cfg.xt_source == "model":
            cond = self.text(concept)
            x, t = self.xt_from_model(gens, cond, n)
            return x, t, cond
        x, t, captions = self.xt_from_images(start, n, gens)
        cond = self.ctx.text(captions) if self.cfg.condition == "caption" else self.text(concept)
        return x, t, cond

    @torch.no_grad()
    def targets(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative-guidance target, the frozen reference's conditional prediction), uncond and cond in one
        batched forward of the frozen reference. x [n, 4, h, w], t [n], cond [1 or n, L, D] -> [n, 4, h, w] x2."""
        n = len(x)
        ref = self.ctx.frozen(torch.cat([x, x]), torch.cat([t, t]),
                              torch.cat([self.empty.expand(n, -1, -1), cond.expand(n, -1, -1)])).sample
        e_neu, e_pos = ref.chunk(2)
        return negative_guidance_target(e_neu, e_pos, self.cfg.eta), e_pos

    def retain_prompt(self, start: int) -> str:
        """The retain prompt of the sample group starting at ``start`` (cycled)."""
        return self.cfg.retain_prompts[start % len(self.cfg.retain_prompts)]

    def retain_term(self, x: torch.Tensor, t: torch.Tensor, prompt: str, cond: torch.Tensor) -> torch.Tensor:
        """||eps_theta(x_t, r) - eps*(x_t, r)||^2 (mean) for retain prompt r at ESD's x_t; ``cond``: the student's
        text states of r, [1, L, D] (AdvUnlearn passes its trainable text encoder's). x [n, 4, h, w], t [n] ->
        scalar."""
        n = len(x)
        with torch.no_grad():
            ref = self.ctx.frozen(x, t, self.text(prompt).expand(n, -1, -1)).sample
        pred = self.student(x, t, cond.expand(n, -1, -1)).sample
        return torch.nn.functional.mse_loss(pred.float(), ref.float())

    def __call__(self, start: int, n: int) -> LossOutput:
        gens = [sample_generator(self.ctx.seed, self.stream, i) for i in range(start, start + n)]
        x, t, cond = self.inputs(start, n, gens)
        target, _ = self.targets(x, t, cond)
        pred = self.student(x, t, cond.expand(n, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        if self.cfg.retain_weight <= 0:
            return LossOutput(loss, {"esd": loss})
        prompt = self.retain_prompt(start)
        if self.cfg.retain_xt == "own":
            x, t = self.xt_from_model([sample_generator(self.ctx.seed, Stream.ESD_RETAIN, i)
                                       for i in range(start, start + n)], self.text(prompt), n)
        retain = self.retain_term(x, t, prompt, self.text(prompt))
        return LossOutput(loss + self.cfg.retain_weight * retain, {"esd": loss, "retain": retain})


def concept_image_source(cfg: ESDConfig, comps, seed: int):
    """Real images of the concept: an image-caption folder, or toy-world renders of the concept."""
    from prunefit.data.datasets import image_caption_folder

    if cfg.concept_images:
        return image_caption_folder(cfg.concept_images, comps.native_resolution, seed)
    from prunefit.data.toyworld_concepts import ToyWorldConceptData

    return ToyWorldConceptData(cfg.concepts, seed, vocabulary=cfg.concept_vocabulary)


def build_phase(ctx: RemovalContext, cfg: ESDConfig, *, name: str = "esd", every: int = 1,
                lr: Optional[float] = None, student: Optional[torch.nn.Module] = None,
                freeze_others: bool = True, lr_factor=None) -> Phase:
    """The method's phase. ``freeze_others=False`` leaves other parameters trainable (bilevel: the lower
    phase trains them); the phase's optimizer still updates only the method's parameter subset."""
    if not cfg.concepts:
        raise ConfigError("esd needs at least one concept (removal.concepts)")
    cfg.check_retain()
    model = student if student is not None else ctx.unet
    named = param_subset(getattr(model, "module", model), cfg.train_method)
    if freeze_others:
        for p in model.parameters():
            p.requires_grad_(False)
    params = [p for _, p in named]
    for p in params:
        p.requires_grad_(True)
    return adamw_phase(name, ESDObjective(ctx, model, cfg), params, lr=lr or cfg.lr, model=model, every=every,
                       lr_factor=lr_factor or (lambda step: 1.0), micro_batch=cfg.batch_size)
