"""The bilevel configuration (the paper's method) and its two realizations as named presets.

Under Adam every coordinate moves by about its learning rate per step, so with two optimizers the balance
between unlearning and distillation is r = upper_lr / (upper_every * lower_lr): lambda and the loss scales
drop out. The paper's r is 5e-6 / (20 * 1e-6) = 0.25; the official code's 5e-6 / (10 * 1e-6) = 0.5.

- ``official`` (the authors' code): two AdamW optimizers over the same student; every step a lower
  (fine-tuning) step at ``train.lr``, every 10th step an upper step at ``upper_lr`` (5e-6, 250 warm-up upper
  steps). The upper ESD step uses real concept images noised at a random t, each conditioned on its own
  caption, the unpruned teacher as reference, all parameters, eta 1, and the lower batch size.
- ``paper`` (Eq. 17-19, one optimizer at ``train.lr``): the theta-gradient of
  G_lambda = f(theta) + lambda (L_ft(theta) - L_ft(vartheta)) is lambda grad L_ft + grad f (vartheta does not
  enter it); f's gradient reaches only the upper method's parameter subset (ESD-x: cross-attention;
  ESD-u: the rest); f is an ESD step (x_t from the student's own DDIM rollout, the concept as condition).
  Two readings of the double loop (``double_loop``):
    * ``interleaved`` (default): theta takes lambda grad L_ft every step, and k grad f every k-th step, so the
      expected gradient per step is lambda grad L_ft + grad f (unbiased; weighting f by 1 every k-th step would
      give it 1/k of its weight);
    * ``nested``: k steps on vartheta (the inner max: vartheta minimizes L_ft at ``train.lr``), then one theta
      step on grad f + lambda grad L_ft at ``upper_lr``; vartheta is then mandatory.
  With one Adam the balance is set by lambda (the gradient ratio), not by a learning-rate ratio.
- ``appc`` (App. C's description of the method, which the authors' code does not run): two AdamW optimizers at the
  paper's learning rates (lower 1e-6, upper 5e-6: r = 0.25), an upper step every 20 lower steps, each an ESD step on
  the student's own DDIM rollout (x_t from the model), conditioned on the concept's name, batch 1 (ESD's), the
  method's own parameter subset (ESD-u for nudity, ESD-x for artists), the unpruned teacher as the reference.
- ``constrained`` (beyond the paper): the official structure (a lower AdamW every step, an upper AdamW every k
  steps, the authors' upper operator) plus the vartheta twin on the same lower batches, and the upper learning rate
  set by dual ascent on the distillation constraint L_ft(theta) - L_ft(vartheta) <= delta, delta = ``dual_delta``
  x L_ft(vartheta): eta_U = r_max k eta_L / (1 + mu_t), mu_{t+1} = max(0, mu_t + ``dual_rho`` (gap - delta) /
  delta) (removal/bilevel/dual.py, after F2SA's value-function penalty and BOME's dynamic barrier). r_max is the
  r of ``upper_lr`` (5e-6 over k = 10 lower steps at train.lr); ``dual_delta`` traces a front.
An optional vartheta twin (``track_vartheta``) reports the constraint gap L_ft(theta) - L_ft(vartheta).
With ``train.ema_decay`` set, the saved weights are theta's exponential moving average (as fine-tuning's are).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional

from prunefit.config.schema import DataConfig, FinetuneLoss, TrainConfig
from prunefit.config.sections import with_sections
from prunefit.errors import ConfigError
from prunefit.removal.registry import get_method, list_methods, method_sections
from prunefit.utils.device import resolve_device, resolve_mixed_precision


@dataclass(frozen=True)
class Preset:
    """What a preset fixes; every field can be overridden by the matching ``BilevelConfig`` key."""

    upper_every: int
    optimizers: int
    """2: a second AdamW for the upper step (official); 1: the penalized G_lambda (paper)."""
    xt_source: str
    train_method: Optional[str]
    """Parameters the upper step trains; None = the method section's own (e.g. esd.train_method)."""
    condition: str
    """caption: each concept image's own caption (official code); concept: the concept's name (ESD)."""
    upper_lr: float
    upper_batch: str
    """lower: the lower level's micro-batch (official code); method: the method section's batch_size (ESD: 1)."""


PRESETS = {
    "official": Preset(upper_every=10, optimizers=2, xt_source="images", train_method="full", condition="caption",
                       upper_lr=5e-6, upper_batch="lower"),
    "paper": Preset(upper_every=20, optimizers=1, xt_source="model", train_method=None, condition="concept",
                    upper_lr=5e-6, upper_batch="method"),
    "appc": Preset(upper_every=20, optimizers=2, xt_source="model", train_method=None, condition="concept",
                   upper_lr=5e-6, upper_batch="method"),
    "constrained": Preset(upper_every=10, optimizers=2, xt_source="images", train_method="full",
                          condition="caption", upper_lr=5e-6, upper_batch="lower"),
}
DOUBLE_LOOPS = ("interleaved", "nested")


UPPER_KEYS = ("concepts", "xt_source", "train_method", "condition", "batch_size")
"""The keys of a train method's section that the presets fill in: a method used as the upper level has them all."""


@dataclass
class BilevelConfig:
    """``prunefit bilevel``: fine-tune an expert while suppressing concepts (lower: distillation; upper:
    a trainable removal method against the unpruned teacher)."""

    model: str = "toyworld"
    student: Optional[str] = None
    output_dir: str = "runs/bilevel"
    resume: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    preset: str = "official"
    upper_method: str = "esd"
    """Any registered train method (``prunefit list methods``): esd, advunlearn."""
    concepts: list[str] = field(default_factory=list)
    upper_every: Optional[int] = None
    """Lower steps per upper step (k); None = the preset's (official 10, paper 20)."""
    lam: float = 100.0
    """lambda of the paper preset (the weight of L_ft in G_lambda); unused by the official preset."""
    double_loop: str = "interleaved"
    """Paper preset: interleaved or nested (see the module docstring)."""
    upper_lr: Optional[float] = None
    """Official: the upper AdamW's lr; paper/nested: the theta step's lr; None = the preset's (5e-6).
    Unused by paper/interleaved (one optimizer at train.lr)."""
    upper_warmup_steps: int = 250
    upper_train_method: Optional[str] = None
    """Parameters the upper step trains (xattn, noxattn, selfattn, full); None = the preset's (official: full;
    paper: the method section's own, e.g. esd.train_method)."""
    upper_xt_source: Optional[str] = None
    """model (ESD: x_t from the student's DDIM rollout) or images (real concept images); None = the preset's."""
    upper_condition: Optional[str] = None
    """caption or concept (what the upper step conditions on); None = the preset's."""
    upper_batch_size: Optional[int] = None
    """Samples per upper step; None = the preset's (official: train.micro_batch_size; paper: the method's)."""
    track_vartheta: bool = False
    dual_delta: float = 0.05
    """constrained: the allowed gap L_ft(theta) - L_ft(vartheta), as a fraction of L_ft(vartheta) (traces a front)."""
    dual_rho: float = 0.5
    """constrained: the dual ascent step (on the gap's excess over delta, relative to delta)."""
    dual_smoothing: float = 0.9
    """constrained: the exponential smoothing of the gap and of L_ft(vartheta) per upper step."""
    cache_dir: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: FinetuneLoss = field(default_factory=FinetuneLoss)

    @classmethod
    def registry_schema(cls) -> type:
        """One section per registered train method (``esd.*``, ``advunlearn.*``, a plugin's)."""
        return with_sections(cls, method_sections("train"))

    @classmethod
    def carried_defaults(cls, merged: dict, explicit: set[str]) -> dict:
        """The model's defaults for the upper method's keys the user left unset (``load_config`` merges them)."""
        from prunefit.removal.defaults import bilevel_carried_defaults

        return bilevel_carried_defaults(merged, explicit)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown bilevel preset {self.preset!r}; available: {sorted(PRESETS)}")
        if self.preset == "paper" and self.train.mixed_precision == "fp16":
            raise ConfigError("preset=paper takes the upper gradient inside its objective, where fp16 loss scaling "
                              "cannot reach it (small gradients underflow); use train.mixed_precision=bf16")
        methods = [m.name for m in list_methods("train")]
        if self.upper_method not in methods:
            raise ConfigError(f"bilevel upper_method must be a train method {methods}, got {self.upper_method!r}")
        if self.double_loop not in DOUBLE_LOOPS:
            raise ConfigError(f"double_loop must be one of {list(DOUBLE_LOOPS)}, got {self.double_loop!r}")
        if self.lam <= 0:
            raise ConfigError(f"lam must be > 0, got {self.lam}")
        if self.upper_every is not None and self.upper_every < 1:
            raise ConfigError(f"upper_every must be >= 1, got {self.upper_every}")
        if (self.upper_lr is not None and self.upper_lr <= 0) or (self.upper_batch_size is not None
                                                                   and self.upper_batch_size < 1):
            raise ConfigError("upper_lr must be > 0 and upper_batch_size >= 1")
        if self.dual_delta <= 0 or self.dual_rho <= 0 or not 0 <= self.dual_smoothing < 1:
            raise ConfigError("dual_delta and dual_rho must be > 0 and dual_smoothing in [0, 1)")
        if self.upper_condition not in (None, "caption", "concept"):
            raise ConfigError(f"upper_condition must be caption or concept, got {self.upper_condition!r}")

    # ------------------------------------------------------------------ the preset, resolved once
    @functools.cached_property
    def resolved(self) -> "ResolvedBilevel":
        """The preset read once into a frozen object (every consumer reads this; computed on first use)."""
        return resolve(self)

    @classmethod
    def check_explicit(cls, cfg: "BilevelConfig", explicit: set[str]) -> None:
        """Refuse, in one line, a key the user set that the preset does not read (``load_config`` calls this)."""
        refuse_ignored(cfg, explicit)

    @property
    def spec(self) -> Preset:
        """The preset's definition."""
        return PRESETS[self.preset]

    @property
    def every(self) -> int:
        """Steps between upper steps (theta steps under paper/nested), as resolved from the preset."""
        return self.resolved.every

    @property
    def nested(self) -> bool:
        """Whether the preset runs the nested double loop, as resolved."""
        return self.resolved.nested

    @property
    def tracks_vartheta(self) -> bool:
        """Whether the vartheta twin is trained, as resolved."""
        return self.resolved.tracks_vartheta

    def resolved_upper_lr(self) -> Optional[float]:
        """The upper step's own learning rate; None where there is none (paper/interleaved: one optimizer)."""
        return self.resolved.upper_lr

    def resolved_upper_batch(self) -> int:
        """The upper step's batch size, as resolved from the preset."""
        return self.resolved.upper_batch

    def upper_section(self):
        """The upper method's own section as configured (its defaults where this config has none)."""
        section = getattr(self, self.upper_method, None)
        return section if section is not None else get_method(self.upper_method).config_cls()

    def balance_r(self) -> Optional[float]:
        """r = upper_lr / (upper_every * lower_lr): the step-size balance under Adam; None for one optimizer."""
        return self.resolved.r

    def upper_config(self):
        """The upper method's config with the concepts and the preset's choices filled in (resolved once)."""
        return self.resolved.upper

    def balance(self) -> dict:
        """What sets the unlearning/distillation balance, for summaries and reports."""
        return dict(self.resolved.balance)


@dataclass(frozen=True)
class ResolvedBilevel:
    """A ``BilevelConfig`` with its preset applied: what the phases, the memory check, the summary and the reports
    read (built once by ``resolve``; the config is not changed)."""

    every: int
    nested: bool
    tracks_vartheta: bool
    upper_lr: Optional[float]
    """The upper step's own learning rate; None where there is none (paper/interleaved: one optimizer)."""
    upper_batch: int
    upper: Any
    """The upper method's config with the concepts and the preset's xt_source, condition, parameters and batch."""
    r: Optional[float]
    balance: Mapping[str, Any]


def resolve(cfg: "BilevelConfig") -> ResolvedBilevel:
    """``cfg``'s preset applied once (see ``ResolvedBilevel``); refuses an upper method or concepts it cannot use."""
    p = cfg.spec
    every = cfg.upper_every or p.upper_every
    nested = p.optimizers == 1 and cfg.double_loop == "nested"
    upper_lr = None if p.optimizers == 1 and not nested else (cfg.upper_lr if cfg.upper_lr is not None
                                                                else p.upper_lr)
    mcfg = cfg.upper_section()
    missing = [k for k in UPPER_KEYS if not hasattr(mcfg, k)]
    if missing:
        raise ConfigError(f"{cfg.upper_method} cannot be the upper level: its config has no {missing} "
                          f"(the presets set {list(UPPER_KEYS)})")
    concepts = list(mcfg.concepts) or list(cfg.concepts)
    if not concepts:
        raise ConfigError("no concepts to suppress: set concepts (e.g. concepts='[skull]')")
    if cfg.upper_batch_size is not None:
        batch = cfg.upper_batch_size
    else:
        batch = cfg.train.micro_batch_size if p.upper_batch == "lower" else mcfg.batch_size
    xt = cfg.upper_xt_source or p.xt_source
    condition = cfg.upper_condition or (p.condition if xt == "images" else "concept")  # captions need images
    upper = dataclasses.replace(mcfg, concepts=concepts, xt_source=xt, condition=condition, batch_size=batch,
                                train_method=cfg.upper_train_method or p.train_method or mcfg.train_method)
    r = None if upper_lr is None else upper_lr / (every * cfg.train.lr)
    one = p.optimizers == 1
    balance = MappingProxyType({
        "preset": cfg.preset, "double_loop": cfg.double_loop if one else None, "r": r, "lower_lr": cfg.train.lr,
        "upper_lr": upper_lr, "upper_every": every, "lam": cfg.lam if one else None,
        "lower_batch": cfg.train.micro_batch_size * cfg.train.grad_accum_steps, "upper_batch": batch})
    constrained = cfg.preset == "constrained"
    if constrained:
        balance = MappingProxyType({**balance, "dual_delta": cfg.dual_delta, "dual_rho": cfg.dual_rho})
    return ResolvedBilevel(every, nested, cfg.track_vartheta or nested or constrained, upper_lr, batch, upper, r,
                           balance)


IGNORED_HINT = {"xt_source": "upper_xt_source", "condition": "upper_condition", "train_method": "upper_train_method",
                "batch_size": "upper_batch_size", "lr": "upper_lr (official, nested) or train.lr (interleaved)"}
"""The upper method's keys a preset fills in, and the bilevel key that sets each instead."""


def refuse_ignored(cfg: "BilevelConfig", explicit: set[str]) -> None:
    """A user-set ``<upper method>.<key>`` that the resolved upper step does not use (the preset fills it in) is
    refused in one line naming the bilevel key that sets it (``esd.xt_source`` under ``official``, ...)."""
    method, section = cfg.upper_method, cfg.upper_section()
    keys = [k for k in IGNORED_HINT if f"{method}.{k}" in explicit and hasattr(section, k)]
    if not keys:  # nothing to compare: resolving waits for the recipe (its input checks come first)
        return
    used = cfg.resolved.upper
    for key in keys:
        instead = IGNORED_HINT[key]
        mine = getattr(section, key)
        if key == "lr" or mine != getattr(used, key):
            what = "its own lr is never read" if key == "lr" else f"the upper step uses {getattr(used, key)!r}"
            raise ConfigError(f"{method}.{key}={mine!r} is not read by bilevel preset={cfg.preset} ({what}); "
                              f"set {instead} instead")

