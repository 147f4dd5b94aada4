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

from prunefit.config.concepts import concept_kind
from prunefit.toyworld.erase_defaults import ADVUNLEARN_RETAIN, CONCEPT_PRUNE_THINGS

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


def kind_of(concept: str, model: str) -> str:
    """The concept's kind (``prunefit.config.concepts``) on the experiments' model: the toy world's table (an
    unknown concept is refused), or the words rule on an open-vocabulary model (SD)."""
    if model == "toyworld":
        from prunefit.toyworld.erase_defaults import toy_concept_kinds

        return concept_kind(concept, toy_concept_kinds())
    return concept_kind(concept)


def _toy_row(kind: str, method: str, concept: Optional[str] = None) -> dict:
    """The toy sidecar's row of ``method`` for ``kind``, with ``concept``'s own entry (its per-concept layer) over
    it: the settings ``prunefit erase`` resolves there too (``prunefit.removal.defaults.resolve_defaults``)."""
    from prunefit.toyworld.erase_defaults import toy_method_defaults

    carried = toy_method_defaults()
    own = (carried["concepts"].get(concept) or {}).get(method, {}) if concept is not None else {}
    return {**carried["kinds"][kind].get(method, {}), **own}


def esd_parameters(concept: str, model: str = "toyworld") -> str:
    """ESD's parameter subset for a concept, by its kind: ESD-u (non-cross-attention) for unsafe concepts and
    objects, as the ESD paper does for nudity and object classes; ESD-x (cross-attention) for styles."""
    from prunefit.removal.esd.method import ESDConfig

    return ESDConfig.kind_defaults.get(kind_of(concept, model), {}).get("train_method", ESDConfig.train_method)


def uce_guide(concept: str, model: str) -> list[str]:
    """UCE's guide concept, by the concept's kind. SD: the reference's "art" (artists), "person" (nudity), " "
    (objects: unconditional). Toy world: the in-vocabulary generic words that play those roles ("painting",
    "drawing"; an unseen word has an untrained embedding), " " for its shapes but "square" for circle, the shape
    the toy teacher draws when a caption names none (the per-concept layer of its defaults)."""
    from prunefit.removal.uce.method import UCEConfig

    kind = kind_of(concept, model)
    if model == "toyworld":
        return list(_toy_row(kind, "uce", concept)["guides"])
    return list(UCEConfig.kind_defaults.get(kind, {}).get("guides", UCEConfig().guides))


def uce_preserve(concept: str, model: str, preserve_captions: int = 20) -> list[str]:
    """UCE's preserve set in experiments. Toy world: the five shapes, the kept artists (the reference
    preserves other artists when erasing one) and neutral captions drawn from the training grammar (toy
    captions are short, so their end-of-text rows resemble the concept's); SD: none (set uce.preserve)."""
    if model != "toyworld":
        return []
    from prunefit.toyworld.erase_defaults import uce_preserve_set
    from prunefit.toyworld.world import KEEP_ARTISTS

    return uce_preserve_set(KEEP_ARTISTS, concept, preserve_captions)


def advunlearn_retain(model: str) -> dict:
    """AdvUnlearn's retain set for the experiments' model as section keys: the toy captions on the toy world (what
    the archived stages recorded), {} elsewhere (the reference's COCO-object prompts, the section's default)."""
    return {"retain_prompts": list(ADVUNLEARN_RETAIN)} if model == "toyworld" else {}


def method_section(config_cls: type, method: str, concept: str, model: str, knobs: EraseKnobs,
                   train_method: Optional[str] = None):
    """A method's section with the experiments' toy-scale protocol for the built-in methods (budgets, UCE's
    guides and preserve set, ConceptPrune's prompts and AdvUnlearn's retain set for the concept's kind and
    model); any other registered method keeps its defaults."""
    params = train_method or esd_parameters(concept, model)
    base = config_cls(concepts=[concept])
    kind = kind_of(concept, model)
    if method == "esd":
        return dataclasses.replace(base, iterations=knobs.esd_iterations, lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params)
    if method == "advunlearn":  # the reference's attack schedule (200 warm-up of 1,000, 30 PGD steps) scaled
        return dataclasses.replace(base.scaled(knobs.advunlearn_iterations), lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params, **advunlearn_retain(model))
    if method == "uce":
        return dataclasses.replace(base, guides=uce_guide(concept, model), preserve=uce_preserve(concept, model))
    if method == "concept_prune":
        prompts = _concept_prune_prompts(concept, kind, model)
        return dataclasses.replace(base, steps=knobs.concept_prune_steps, **prompts)
    return base


def _concept_prune_prompts(concept: str, kind: str, model: str) -> dict:
    """ConceptPrune's subjects and templates: the reference's for the kind on SD; on the toy world its shapes with
    the toy templates (the unsafe one written out with the concept, as the archived stages recorded it)."""
    from prunefit.removal.concept_prune.method import ConceptPruneConfig

    if model != "toyworld":
        return dict(ConceptPruneConfig.kind_defaults.get(kind, {}))
    toy = {"things": list(CONCEPT_PRUNE_THINGS), "base_template": "{thing}",
           "target_template": "{thing} in the style of {concept}"}
    if kind == "unsafe":
        return {**toy, "target_template": "{thing} that is a " + concept}
    return {**toy, **_toy_row(kind, "concept_prune", concept)}
