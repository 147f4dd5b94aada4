"""Method defaults a model carries (its prunefit.json), resolved for one method and concept set by kind of concept.

Precedence, lowest first: the method's own defaults (the papers' values for a style) < the model's defaults for
the concepts' kind (``prunefit.config.concepts``: style, object, unsafe) < anything the user set (a YAML file or
a key=value override). A model with a sidecar carries them as ``methods`` (every concept) < ``kinds`` (its rows
per kind) < ``concepts`` (per concept), and ``concept_kinds`` (its closed vocabulary: an unknown concept is
refused). A model without one (SD, a hub id, ``tiny``) gets each method's reference values for the kind
(``kind_defaults`` on its config class: ESD-u for nudity and objects, UCE's "person" / " " guides,
ConceptPrune's reference prompts), the kind from ``concept_kind``'s words rule or ``removal.concept_kind``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

from prunefit.config.concepts import concept_kind
from prunefit.errors import ConfigError

PRESERVE_KEYS = ("preserve",)
"""List settings the erased concepts are dropped from (UCE must not preserve what it erases)."""

RETAIN_KEYS = ("retain_prompts",)
"""Prompt lists whose prompts naming an erased concept are dropped (ESD / AdvUnlearn must not hold a circle while
erasing circles)."""


def _names(prompt: str, concept: str) -> bool:
    """Whether ``prompt`` names ``concept`` (whole words, any case)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(concept.lower())}(?![a-z0-9])", prompt.lower()) is not None


def _shared(rows: list[dict]) -> dict:
    """The keys every row of ``rows`` sets to the same value."""
    return {k: v for k, v in rows[0].items() if all(r.get(k) == v for r in rows[1:])} if rows else {}


def resolve_defaults(carried: dict, method: str, concepts: Sequence[str], stated: Optional[str] = None
                     ) -> dict[str, Any]:
    """Section keys for ``method`` from a model's ``method_defaults`` (``{"methods", "kinds", "concepts",
    "concept_kinds"}``). A kind or concept entry applies when every erased concept has it with the same value;
    ``stated`` is the user's ``concept_kind``. The kinds are looked up only where a kind row names ``method``."""
    out = dict((carried.get("methods") or {}).get(method) or {})
    by_kind = carried.get("kinds") or {}
    if concepts and any(method in (rows or {}) for rows in by_kind.values()):
        known = carried.get("concept_kinds")
        kinds = [concept_kind(c, known, stated) for c in concepts]
        out.update(_shared([dict((by_kind.get(k) or {}).get(method) or {}) for k in kinds]))
    out.update(_shared([((carried.get("concepts") or {}).get(c) or {}).get(method) or {} for c in concepts]))
    for key in PRESERVE_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [p for p in out[key] if p not in concepts]
    for key in RETAIN_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [p for p in out[key] if not any(_names(p, c) for c in concepts)]
    return out


def reference_defaults(method: str, concepts: Sequence[str], stated: Optional[str] = None) -> dict[str, Any]:
    """``method``'s reference settings for the concepts' kind on a model that carries none (SD): its config
    class's ``kind_defaults``; {} for a style (the class defaults are the style settings) or mixed kinds."""
    from prunefit.removal.registry import get_method

    table = getattr(get_method(method).config_cls, "kind_defaults", None) or {}
    if not concepts or not table:
        return {}
    return _shared([dict(table.get(concept_kind(c, None, stated)) or {}) for c in concepts])


def method_defaults(components, method: str, concepts: Sequence[str] = ()) -> dict[str, Any]:
    """The settings of ``method``'s config section that ``components``' model carries, for ``concepts``
    (e.g. the toy world's ``{"lr": 1e-4, "iterations": 200, "ddim_steps": 20}`` for esd); {} on SD."""
    return resolve_defaults(getattr(components, "method_defaults", {}) or {}, method, concepts)


def carried_section(model: str, method: str, concepts: Sequence[str], explicit: set[str],
                    stated: Optional[str] = None) -> dict[str, Any]:
    """The keys of ``method``'s section that ``model`` gives ``concepts`` (its prunefit.json's, else the method's
    reference values for their kind) and the user did not set (``explicit``: dotted keys), checked against the
    section's fields."""
    from prunefit.models.components import model_sidecar
    from prunefit.removal.registry import get_method

    carried = model_sidecar(model).get("method_defaults") or {}
    values = resolve_defaults(carried, method, concepts, stated) if carried else \
        reference_defaults(method, concepts, stated)
    if not values:
        return {}
    fields = {f.name for f in dataclasses.fields(get_method(method).config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"the model's prunefit.json sets unknown {method} keys {unknown}; valid: {sorted(fields)}")
    return {k: v for k, v in values.items() if f"{method}.{k}" not in explicit}


def erase_carried_defaults(merged: dict, explicit: set[str]) -> dict:
    """``EraseConfig``'s layer of model defaults (see ``config.load.load_config``): the chosen method's carried
    keys, and ``removal.model_defaults`` recording them."""
    removal = merged.get("removal") or {}
    method = removal.get("method")
    values = _method_layer(merged, method, removal.get("concepts"), removal.get("concept_kind"), explicit)
    return {method: values, "removal": {"model_defaults": [f"{method}.{k}" for k in sorted(values)]}} if values else {}


def bilevel_carried_defaults(merged: dict, explicit: set[str]) -> dict:
    """``BilevelConfig``'s layer of model defaults: the upper method's carried keys (e.g. the toy world's 20-step
    ESD rollouts and ESD-u for the unsafe concept; ESD-u for nudity on SD)."""
    method = merged.get("upper_method")
    values = _method_layer(merged, method, merged.get("concepts"), merged.get("concept_kind"), explicit)
    return {method: values} if values else {}


def _method_layer(merged: dict, method, concepts, kind, explicit: set[str]) -> dict:
    """The carried keys of ``method``'s section of a merged config ({} when it has none): the section's own concepts,
    else ``concepts``, of the stated ``kind``."""
    section = merged.get(method) if isinstance(method, str) else None
    if not isinstance(section, dict):
        return {}
    concepts = list(section.get("concepts") or concepts or [])
    return carried_section(merged.get("model", ""), method, concepts, explicit, kind)
