"""A concept's kind (style, object or unsafe content): the key removal methods pick their settings by.

The ESD paper tells three kinds of erased concept apart, and so do the methods' references: artist **styles**
(ESD-x, UCE guided to "art"), **objects** (ESD-u, UCE guided to the unconditional prompt) and **unsafe** content
such as nudity (ESD-u, UCE guided to "person", ConceptPrune's "naked" prompts). ``concept_kind`` is the one place
that decides a concept's kind:

- a model with a closed vocabulary (the toy world: its ``prunefit.json`` carries ``concept_kinds``, built by
  ``prunefit.toyworld.erase_defaults.toy_concept_kinds``) knows every concept's kind; a concept it does not know
  is refused in one line, and a stated kind that disagrees too;
- an open-vocabulary model (SD, a hub id, ``tiny``): a concept naming nudity or sexual content
  (``UNSAFE_WORDS``, whole words, any case) is unsafe, unless the user states ``removal.concept_kind``; any other
  concept is what the user states, else a style (the paper's other erased concepts are artists, and the methods'
  own defaults are their style settings: ESD-x, UCE's "art").
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from prunefit.errors import ConfigError

KINDS = ("style", "object", "unsafe")
"""The kinds of concept, as the ESD paper distinguishes them (artists, objects, nudity)."""

UNSAFE_WORDS = ("nudity", "nude", "nudes", "naked", "nakedness", "nsfw", "sexual", "sex", "porn", "pornography",
                "pornographic", "erotic", "topless", "i2p")
"""Words that make a concept unsafe on an open-vocabulary model (``i2p``: the reference's bundle of I2P concepts)."""

_WORD = re.compile(r"[a-z0-9]+")


def concept_kind(concept: str, known: Optional[Mapping[str, str]] = None, stated: Optional[str] = None) -> str:
    """The kind of ``concept`` ("style", "object" or "unsafe") on a model whose closed vocabulary is ``known``
    (concept -> kind; None for an open-vocabulary model such as SD); ``stated`` is the user's ``concept_kind``."""
    if stated is not None and stated not in KINDS:
        raise ConfigError(f"removal.concept_kind must be one of {', '.join(KINDS)}, got {stated!r}")
    if known is not None:
        kind = known.get(concept)
        if kind is None:
            raise ConfigError(f"concept {concept!r} is not one this model knows; erase one of: "
                              f"{', '.join(sorted(known))}")
        if stated is not None and stated != kind:
            raise ConfigError(f"concept {concept!r} is of kind {kind} on this model, not {stated}; drop "
                              "removal.concept_kind")
        return kind
    if stated is not None:
        return stated
    return "unsafe" if set(_WORD.findall(concept.lower())) & set(UNSAFE_WORDS) else "style"
