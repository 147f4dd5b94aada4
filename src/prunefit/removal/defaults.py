"""Method defaults a model carries (its prunefit.json), resolved for one method and concept set.

Precedence, lowest first: the method's own defaults (the papers' values) < the model's ``methods`` entry < its
``concepts`` entry for the erased concept(s) < anything the user set (a YAML file or a key=value override).
A model without a sidecar (SD, a hub id, ``tiny``) keeps the papers' values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from prunefit.errors import ConfigError

PRESERVE_KEYS = ("preserve",)
"""List settings the erased concepts are dropped from (UCE must not preserve what it erases)."""


def resolve_defaults(carried: dict, method: str, concepts: Sequence[str]) -> dict[str, Any]:
    """Section keys for ``method`` from a model's ``method_defaults`` (``{"methods": ..., "concepts": ...}``).
    A concept entry applies when every erased concept has it with the same value."""
    out = dict((carried.get("methods") or {}).get(method) or {})
    per = [((carried.get("concepts") or {}).get(c) or {}).get(method) or {} for c in concepts]
    if per:
        shared = {k: v for k, v in per[0].items() if all(p.get(k) == v for p in per[1:])}
        out.update(shared)
    for key in PRESERVE_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [p for p in out[key] if p not in concepts]
    return out


def method_defaults(components, method: str, concepts: Sequence[str] = ()) -> dict[str, Any]:
    """The settings of ``method``'s config section that ``components``' model carries, for ``concepts``
    (e.g. the toy world's ``{"lr": 1e-4, "iterations": 200, "ddim_steps": 20}`` for esd); {} on SD."""
    return resolve_defaults(getattr(components, "method_defaults", {}) or {}, method, concepts)


def carried_section(model: str, method: str, concepts: Sequence[str], explicit: set[str]) -> dict[str, Any]:
    """The keys of ``method``'s section that ``model``'s prunefit.json carries for ``concepts`` and the user did
    not set (``explicit``: dotted keys), checked against the section's fields; {} without a sidecar."""
    from prunefit.models.components import model_sidecar
    from prunefit.removal.registry import get_method

    carried = model_sidecar(model).get("method_defaults") or {}
    values = resolve_defaults(carried, method, concepts) if carried else {}
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
    method = (merged.get("removal") or {}).get("method")
    section = merged.get(method) if isinstance(method, str) else None
    if not isinstance(section, dict):
        return {}
    concepts = list(section.get("concepts") or merged["removal"].get("concepts") or [])
    values = carried_section(merged.get("model", ""), method, concepts, explicit)
    return {method: values, "removal": {"model_defaults": [f"{method}.{k}" for k in sorted(values)]}} if values else {}


def bilevel_carried_defaults(merged: dict, explicit: set[str]) -> dict:
    """``BilevelConfig``'s layer of model defaults: the upper method's carried keys (e.g. the toy world's 20-step
    ESD rollouts and ESD-u for the unsafe concept)."""
    method = merged.get("upper_method")
    section = merged.get(method) if isinstance(method, str) else None
    if not isinstance(section, dict):
        return {}
    concepts = list(section.get("concepts") or merged.get("concepts") or [])
    values = carried_section(merged.get("model", ""), method, concepts, explicit)
    return {method: values} if values else {}
