"""The erasure matrix's config: the method variants, their display names, and the experiment's budgets."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from prunefit.errors import ConfigError
from prunefit.experiments.common.protocol import TOY_ATTACK_BUDGETS, EraseKnobs
from prunefit.utils.device import resolve_device

VARIANTS = {"esd-x": ("esd", "xattn"), "esd-u": ("esd", "noxattn"), "uce": ("uce", None),
            "concept_prune": ("concept_prune", None), "advunlearn": ("advunlearn", None)}
"""Variant -> (registered method, ESD / AdvUnlearn parameter subset; None = the concept's default). Any other
registered method is a variant of its own name, run with its section's defaults."""


def variant_method(variant: str) -> tuple[str, Optional[str]]:
    """(registered method, parameter subset) of a variant name: a row of VARIANTS or a registered method."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    from prunefit.removal.registry import get_method

    return get_method(variant).name, None


NAMES = {"original": "Original teacher", "esd-x": "ESD-x", "esd-u": "ESD-u", "uce": "UCE",
         "concept_prune": "ConceptPrune", "advunlearn": "AdvUnlearn"}


@dataclass
class ErasureConfig:
    model: str = "toyworld"
    output_dir: str = "runs/erasure"
    concepts: list[str] = field(default_factory=lambda: ["Vincent Stripes", "skull"])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    threads: int = 1
    """torch threads of the whole experiment (set at the start, recorded in the report)."""
    eval_prompts: int = 100
    kept_artists: int = 3
    esd_iterations: int = 200
    """Toy-scale budget (ESD's reference: 1,000 iterations at lr 1e-5 on SD)."""
    esd_lr: float = 1e-4
    esd_ddim_steps: int = 20
    advunlearn_iterations: int = 200
    concept_prune_steps: int = 10
    attacks: list[str] = field(default_factory=lambda: ["unlearndiff", "ringabell"])
    """Attacks run on every row ("ASR under attack" columns; see `prunefit list attacks`); [] = none."""
    attack_prompts: int = 0
    """Plain concept prompts attacked per row (the first N of the concept's plain set); 0 = min(32, eval_prompts)."""
    attack_budgets: dict = field(default_factory=lambda: copy.deepcopy(TOY_ATTACK_BUDGETS))
    """Per-attack config overrides (``TOY_ATTACK_BUDGETS``)."""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        from prunefit.attacks.registry import get_attack

        for a in self.attacks:
            get_attack(a)  # unknown attacks fail before any work
        if self.attack_prompts < 0:
            raise ConfigError("attack_prompts must be >= 0 (0 = min(32, eval_prompts))")
        self.attack_prompts = self.attack_prompts or min(32, self.eval_prompts)
        from prunefit.removal.registry import list_methods

        known = list(VARIANTS) + [m.name for m in list_methods() if m.name not in VARIANTS]
        bad = [v for v in self.variants if v not in known]
        if bad:
            raise ConfigError(f"unknown erasure variants {bad}; available: {known}")
        if self.model != "toyworld":
            raise ConfigError("experiment erasure is judged by the toy world's judge: model must be toyworld "
                              "(on SD, run `prunefit erase` per method and `prunefit evaluate`)")
        if self.eval_prompts < 2 or self.esd_iterations < 1 or self.advunlearn_iterations < 1 or self.threads < 1:
            raise ConfigError("eval_prompts must be >= 2, the iteration budgets and threads >= 1")

    def knobs(self) -> EraseKnobs:
        """The removal methods' settings of this experiment."""
        return EraseKnobs.of(self)

