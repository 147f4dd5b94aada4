"""Method defaults a model carries (its prunefit.json), resolved for one method and concept set.

Precedence, lowest first: the method's own defaults (the papers' values) < the model's ``methods`` entry < its
``concepts`` entry for the erased concept(s) < anything the user set (a YAML file or a key=value override).
A model without a sidecar (SD, a hub id, ``tiny``) keeps the papers' values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

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


def explicit_keys(files: Sequence[str | Path], overrides: Sequence[str]) -> set[str]:
    """Dotted keys the user set in YAML files or key=value overrides (their parents included)."""
    keys: set[str] = set()

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            keys.add(prefix + str(k))
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    for f in files:
        data = yaml.safe_load(Path(f).read_text()) if Path(f).is_file() else None
        if isinstance(data, dict):
            walk(data, "")
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        parts = key.split(".")
        keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return keys


def apply_defaults(section: Any, name: str, values: dict[str, Any], explicit: set[str]) -> tuple[Any, list[str]]:
    """``section`` with ``values`` for every key the user did not set (validated again); the keys applied."""
    fields = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"the model's prunefit.json sets unknown {name} keys {unknown}; valid: {sorted(fields)}")
    chosen = {k: v for k, v in values.items() if f"{name}.{k}" not in explicit}
    return (dataclasses.replace(section, **chosen) if chosen else section), sorted(chosen)


def apply_model_defaults(cfg: Any, section: str, concepts: Sequence[str], files: Sequence[str | Path],
                         overrides: Sequence[str]) -> list[str]:
    """Set ``cfg.<section>`` to the section with ``cfg.model``'s carried defaults for ``concepts`` on every key the
    user did not set; the dotted keys applied ([] without a sidecar or without that section)."""
    from prunefit.models.components import model_sidecar

    carried = model_sidecar(cfg.model).get("method_defaults") or {}
    current = getattr(cfg, section, None)
    if not carried or current is None:
        return []
    values = resolve_defaults(carried, section, concepts)
    new, applied = apply_defaults(current, section, values, explicit_keys(files, overrides))
    setattr(cfg, section, new)
    return [f"{section}.{k}" for k in applied]


def load_erase_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()):
    """``load_config(EraseConfig, files, overrides)``, then the model's method defaults for keys left unset."""
    from prunefit.config.load import load_config
    from prunefit.removal.config import EraseConfig

    cfg = load_config(EraseConfig, files, overrides)
    section = getattr(cfg, cfg.removal.method, None)
    if section is not None:
        concepts = list(section.concepts or cfg.removal.concepts)
        cfg.removal.model_defaults = apply_model_defaults(cfg, cfg.removal.method, concepts, files, overrides)
    return cfg


def load_bilevel_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()):
    """``load_config(BilevelConfig, files, overrides)``, then the model's defaults for the upper method's section
    (e.g. the toy world's 20-step ESD rollouts and ESD-u for the unsafe concept) on keys left unset."""
    from prunefit.config.load import load_config
    from prunefit.removal.bilevel.config import BilevelConfig

    cfg = load_config(BilevelConfig, files, overrides)
    section = getattr(cfg, cfg.upper_method, None)
    if section is not None:
        apply_model_defaults(cfg, cfg.upper_method, list(section.concepts or cfg.concepts), files, overrides)
    return cfg
