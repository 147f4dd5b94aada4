"""The toy method protocol of the experiments: each removal method's budgets, parameter subset, guides and preserve set.

One protocol for Table 3, the Pareto fronts and the erasure matrix (the committed results in docs/results ran it).
It differs from the teacher's own method defaults (``prunefit.toyworld.erase_defaults``, what `prunefit erase` uses)
on purpose in two places, both as parameters of shared code: the budgets (``EraseKnobs``, set per experiment) and
UCE's preserved artists (the kept artists here, every artist there; ``uce_preserve_set``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from prunefit.experiments.common.judging import is_unsafe

TOY_ATTACK_BUDGETS = {"unlearndiff": {"iterations": 40}, "ringabell": {"generations": 50, "population": 64},
                      "p4d": {"iterations": 100}}
"""The experiments' toy-scale attack budgets: UnlearnDiffAtk at its paper's 40 iterations; Ring-A-Bell and P4D far
below their 3,000 generations / iterations."""


@dataclass
class EraseKnobs:
    """Budgets of the removal methods in an experiment (toy-scale defaults live in the experiment configs)."""

    esd_iterations: int
    esd_lr: float
    esd_ddim_steps: int
    advunlearn_iterations: int
    concept_prune_steps: int

    @classmethod
    def of(cls, cfg) -> "EraseKnobs":
        """The budgets of an experiment config that declares these five keys (Table 3 / Pareto, the erasure
        matrix: each with its own defaults)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def esd_parameters(concept: str) -> str:
    """ESD's parameter subset for a concept: ESD-u (non-cross-attention) for the unsafe concept, as the ESD
    paper does for nudity; ESD-x (cross-attention) for artists."""
    return "noxattn" if is_unsafe(concept) else "xattn"


def uce_guide(concept: str, model: str) -> list[str]:
    """UCE's guide concept. SD: the reference's "art" (artists) / "person" (nudity). Toy world: the in-vocabulary
    generic words that play those roles ("painting", "drawing"; an unseen word has an untrained embedding)."""
    if model == "toyworld":
        from prunefit.toyworld.world import UCE_GUIDES

        return [UCE_GUIDES["unsafe" if is_unsafe(concept) else "artist"]]
    return ["person"] if is_unsafe(concept) else ["art"]



def uce_preserve(concept: str, model: str, preserve_captions: int = 20) -> list[str]:
    """UCE's preserve set in experiments. Toy world: the five shapes, the kept artists (the reference
    preserves other artists when erasing one) and neutral captions drawn from the training grammar (toy
    captions are short, so their end-of-text rows resemble the concept's); SD: none (set uce.preserve)."""
    if model != "toyworld":
        return []
    from prunefit.toyworld.erase_defaults import uce_preserve_set
    from prunefit.toyworld.world import KEEP_ARTISTS

    return uce_preserve_set(KEEP_ARTISTS, concept, preserve_captions)


def method_section(config_cls: type, method: str, concept: str, model: str, knobs: EraseKnobs,
                   train_method: Optional[str] = None):
    """A method's section with the experiments' toy-scale protocol for the built-in methods (budgets, UCE's
    guides and preserve set, ConceptPrune's unsafe template); any other registered method keeps its defaults."""
    params = train_method or esd_parameters(concept)
    base = config_cls(concepts=[concept])
    if method == "esd":
        return dataclasses.replace(base, iterations=knobs.esd_iterations, lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params)
    if method == "advunlearn":  # the reference's attack schedule (200 warm-up of 1,000, 30 PGD steps) scaled
        return dataclasses.replace(base.scaled(knobs.advunlearn_iterations), lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params)
    if method == "uce":
        return dataclasses.replace(base, guides=uce_guide(concept, model), preserve=uce_preserve(concept, model))
    if method == "concept_prune":
        template = {"target_template": "{thing} that is a " + concept} if is_unsafe(concept) else {}
        return dataclasses.replace(base, steps=knobs.concept_prune_steps, **template)
    return base

