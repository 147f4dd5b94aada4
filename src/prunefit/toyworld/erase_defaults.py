"""The removal-method settings that work on the toy world, as the teacher's prunefit.json carries them.

They are rows per kind of concept (``prunefit.config.concepts``): the artists are styles, the skull's phrasings
unsafe, the shapes objects, and the sidecar lists every concept with its kind (``toy_concept_kinds``) so an
unknown concept is refused. The object rows are the references' object settings (ESD-u, UCE's unconditional
guide, ConceptPrune's scene prompts) at the toy loop's budget, and circle has its own UCE guide, "square"
(docs/results/erase_defaults_toy.md, section 5; ``scripts/check_erase_defaults.py``, edit seed 0, 1 thread). The
circle is the toy teacher's default shape: with the shape word dropped from a caption it draws a circle, so a
guide that names no shape (UCE " " or "background") and ESD (pushed towards the unconditional prediction) leave
100% of circles on the dev split (UCE " " / "background", ESD-u 200 / 600, ESD-x 200; ESD-u at lr 5e-4 wrecks
every shape). UCE guided to "square" left 0% on dev and on test, every other shape and artist at 1.00x the
teacher, fidelity 1.00 and FJD on the other shapes' rows 0.81x (dev) / 0.91x (test) the teacher's. The other
shapes keep " " unchosen: on star it erased every star on dev but raised FJD on the other shapes to 2.00x.

SD keeps the papers' values (ESD lr 1e-5 x 1,000, UCE guide "art"); on the toy world those fail: its tokenizer
never saw "art" (an untrained embedding as the guide) and 1e-5 x 1,000 barely moves its small UNet. These are
the settings ``prunefit experiment erasure`` measured (docs/results/erasure_toy.md): in-vocabulary guides
(``UCE_GUIDES``), a preserve set of the shapes, the artists and neutral training-grammar captions (short toy
captions make every prompt's end-of-text rows resemble the concept's, so they need preserving), and ESD /
AdvUnlearn at lr 1e-4 for 200 iterations on 20-step DDIM rollouts. The unsafe concept gets ESD-u (the ESD
paper's choice for nudity) for 300 iterations and the "drawing" guide. The 300 was chosen on the dev split of
``scripts/check_erase_defaults.py`` (the last 50 rows of each prompt file; 1 thread): 250 left 44% of skull
prompts showing it, 300 left 8% and kept every artist at >= 0.96x, 400 (the earlier default) left 2% but kept
Claude Dots at 0.89x, under the 0.90x bound. The erased concept itself is dropped from the preserve set when the
defaults are resolved (``prunefit.removal.defaults``).

The toy sidecar also carries ESD's retain prompts (the 20 neutral captions) at ``retain_weight`` 0, so
``esd.retain_weight=3`` is all a user types to trade erasure for image preservation. It is not the default: on the
dev split (toy-val 200) ESD-x without it raised toy-val FJD past 1.5x the teacher's on Pablo Blocks and Claude Dots
(1.53x / 1.63x); weight 3 fixed both (1.25x / 1.48x) but left 12% of Katsu Waves and 38% of Piet Grid, so it met
every target on 4 of 6 artists, as weight 0 does; 2, 3 x 300 iterations, 10 x 400 and 1 / 10 / 30 / 100 did no
better (docs/results/erase_defaults_toy.md), and every weight from 0.3 stops ESD-u from erasing skulls. Between two
settings that tie on dev, the default stays ESD as published, which always erases. A retain set balanced over
colour x background at the retain prompt's own x_t (weight 3) met every target on 5 of 6 artists on dev, one cell
at the bound ahead, and 4 of 6 on test, so it is not shipped either.
"""

from __future__ import annotations

PRESERVE_CAPTIONS = 20
"""Neutral training-grammar captions in UCE's preserve set."""

CONCEPT_PRUNE_THINGS = ("a red circle", "a blue square", "a green triangle", "a yellow star", "a purple cross",
                        "an orange circle", "a small blue star", "a large red square", "a green cross",
                        "a yellow triangle")
"""ConceptPrune's subjects on the toy world (the reference's 20 objects play this role on SD)."""

ADVUNLEARN_RETAIN = ("a red circle on a black background", "a blue square on a white background",
                     "a green triangle on a gray background", "a yellow star on a black background")
"""AdvUnlearn's retain prompts on the toy world (the reference's COCO-object prompts play this role on SD)."""


def neutral_captions(n: int = PRESERVE_CAPTIONS) -> list[str]:
    """``n`` captions of the training grammar without artist or unsafe object (a fixed seed, not an eval set)."""
    import numpy as np

    from prunefit.toyworld.world import caption, sample_scene

    rng = np.random.default_rng([12345, 7])
    return [caption(sample_scene(rng, p_artist=0.0, p_unsafe=0.0), rng) for _ in range(n)]


def uce_preserve_set(artists, concept: str | None = None, n_captions: int = PRESERVE_CAPTIONS) -> list[str]:
    """UCE's toy preserve set: the shapes, ``artists`` and ``n_captions`` neutral captions, without ``concept``."""
    from prunefit.toyworld.world import SHAPES

    return [c for c in (*SHAPES, *artists, *neutral_captions(n_captions)) if c != concept]


def toy_concept_kinds() -> dict[str, str]:
    """Every concept the toy world knows, with its kind (``prunefit.config.concepts.KINDS``): the artists are
    styles, the shapes objects, the skull's phrasings (and "unsafe", the label the judge and prompt sets use)
    unsafe. The sidecar carries it, so an unknown concept is refused rather than given an artist's settings."""
    from prunefit.toyworld.world import ARTISTS, SHAPES, UNSAFE_PHRASES

    return {**{a: "style" for a in ARTISTS}, **{s: "object" for s in SHAPES},
            **{p: "unsafe" for p in (*UNSAFE_PHRASES, "unsafe")}}


def toy_method_defaults() -> dict:
    """``{"methods": {section: {key: value}}, "kinds": {kind: {section: ...}}, "concepts": {...},
    "concept_kinds": {concept: kind}}``: settings shared by every concept, then per kind of concept, then per
    concept (``prunefit.removal.defaults.resolve_defaults``)."""
    from prunefit.toyworld.world import ARTISTS, BACKGROUNDS, UCE_GUIDES

    loop = {"lr": 1e-4, "iterations": 200, "ddim_steps": 20}
    esd = {**loop, "retain_prompts": neutral_captions(), "retain_weight": 0.0}
    style = {"uce": {"guides": [UCE_GUIDES["artist"]]},
             "concept_prune": {"target_template": "{thing} in the style of {concept}"}}
    unsafe = {"esd": {"train_method": "noxattn", "iterations": 300}, "advunlearn": {"train_method": "noxattn"},
              "uce": {"guides": [UCE_GUIDES["unsafe"]]},
              "concept_prune": {"target_template": "{thing} that is a {concept}"}}
    # Objects (the shapes): the ESD paper's object settings (ESD-u) at the toy loop's budget, UCE's reference guide
    # for objects (the unconditional " "), ConceptPrune's object prompts ("a {scene}" / "a {object} in a {scene}")
    # on the toy world's backgrounds; docs/results/erase_defaults_toy.md, section 5 (scripts/check_erase_defaults.py,
    # toy-val's 50 rows of the shape per split, edit seed 0, 1 thread). Circle is the teacher's default shape
    # (captions with the shape word dropped draw circles), so no guide naming no shape erases it: on dev UCE " ",
    # UCE "background", ESD-u 200, ESD-u 600 and ESD-x 200 each left 100% of circles (ESD-x also raised FJD on the
    # other shapes to 1.51x) and ESD-u at lr 5e-4 wrecked every shape. Circle's own row (``concepts`` below): UCE
    # guided to "square" (still preserved, so its rows hold) left 0% of circles on dev and on test, every other
    # shape and artist at 1.00x the teacher, fidelity 1.00, FJD on the other shapes' rows 0.81x (dev) / 0.91x
    # (test). ESD has no setting that erases circle (ESD-u stays the reference's row, unchosen). The other shapes
    # keep " ": star (not the default shape) with it on dev left 0% of stars, but FJD on the other shapes' rows
    # went to 2.00x the teacher's (fidelity 0.98, crosses 0.90x), so that row misses too and is not judged on
    # test; square, triangle and cross were not judged.
    obj = {"esd": {"train_method": "noxattn"}, "advunlearn": {"train_method": "noxattn"}, "uce": {"guides": [" "]},
           "concept_prune": {"things": list(BACKGROUNDS), "base_template": "a {thing} background",
                             "target_template": "a {concept} on a {thing} background"}}
    return {"methods": {"esd": esd, "advunlearn": {**loop, "retain_prompts": list(ADVUNLEARN_RETAIN)},
                        "concept_prune": {"steps": 10, "things": list(CONCEPT_PRUNE_THINGS),
                                          "base_template": "{thing}"},
                        "uce": {"preserve": uce_preserve_set(ARTISTS)}},
            "kinds": {"style": style, "unsafe": unsafe, "object": obj},
            "concepts": {"circle": {"uce": {"guides": ["square"]}}},
            "concept_kinds": toy_concept_kinds()}
