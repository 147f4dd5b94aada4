"""Load a dataclass config from YAML files and key=value overrides (the only place OmegaConf is used).

``load_config(GenerateConfig, ["a.yaml"], ["sampler.steps=10"])`` merges, in order: the schema's
defaults, each YAML file, then the overrides. Unknown keys and wrong types are rejected with a
message naming the key and where it came from. The result is a plain dataclass instance; code below
the CLI never sees an OmegaConf object.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from prunefit.config.sections import concrete_schema
from prunefit.errors import ConfigError, PrunefitError
from prunefit.utils.io import atomic_write_text

T = TypeVar("T")


def _merge_one(base, layer, source: str):
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as exc:
        key = exc.full_key or getattr(exc, "key", "?")
        raise ConfigError(f"unknown config key {key!r} in {source}; "
                          f"valid keys: {_valid_keys(base, str(key))}") from None
    except ValidationError as exc:
        raise ConfigError(f"wrong type for key {exc.full_key!r} in {source}: {_first_line(exc)}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config in {source}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _valid_keys(cfg, full_key: str) -> list[str]:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    try:
        return sorted(str(k) for k in node.keys())
    except Exception:  # pragma: no cover - defensive: message stays useful without the list
        return []


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _warn_renamed(old: str, new: str, where: str) -> None:
    print(f"prunefit: warning: config key {old!r} ({where}) is now {new!r}; the old spelling still works",
          file=sys.stderr)


def _rename_yaml(data: dict[str, Any], renamed: dict[str, str], where: str) -> dict[str, Any]:
    """``data`` with every renamed dotted key moved to its new spelling (warned once each)."""
    for old, new in renamed.items():
        *parents, leaf = old.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *nparents, nleaf = new.split(".")
        target = data
        for p in nparents:
            target = target.setdefault(p, {})
        target[nleaf] = value
        _warn_renamed(old, new, where)
    return data


def _rename_override(override: str, renamed: dict[str, str]) -> str:
    key, sep, value = override.partition("=")
    for old, new in renamed.items():
        if key == old or key.startswith(old + "."):
            _warn_renamed(old, new, "command-line override")
            return new + key[len(old):] + sep + value
    return override


def load_config(schema: type[T], files: Sequence[str | os.PathLike] = (), overrides: Sequence[str] = ()) -> T:
    """Return an instance of ``schema`` from defaults + YAML ``files`` + ``key=value`` ``overrides``. Keys the
    schema lists in its ``renamed_keys`` (old dotted key -> new) are read under their old spelling too, with a
    one-line warning.

    A schema whose defaults depend on the model it names (a model's ``prunefit.json`` carries method defaults)
    declares ``carried_defaults(merged: dict, explicit: set[str]) -> dict``: given the user's merged settings and
    the dotted keys the user set, it returns a layer that goes between the schema's defaults and the user's files,
    so every caller (CLI, Python API, experiments) gets the same settings and the object is validated once. A
    schema may also declare ``check_explicit(cfg, explicit)``, which refuses a key the user set that the resolved
    config does not read (one line, naming the key that does)."""
    renamed: dict[str, str] = getattr(schema, "renamed_keys", {})
    layers: list[tuple[Any, str]] = []
    for f in files:
        path = Path(f)
        layers.append((OmegaConf.create(_rename_yaml(_read_yaml(path), renamed, str(path))), str(path)))
    overrides = [_rename_override(o, renamed) for o in overrides]
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        layers.append((OmegaConf.from_dotlist(list(overrides)), "command-line overrides"))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {_first_line(exc)}") from None
    base = OmegaConf.structured(concrete_schema(schema))
    cfg = base
    for layer, source in layers:
        cfg = _merge_one(cfg, layer, source)
    explicit = set().union(*(_dotted_keys(OmegaConf.to_container(layer)) for layer, _ in layers))
    carried = getattr(schema, "carried_defaults", None)
    if carried is not None:
        extra = carried(OmegaConf.to_container(cfg, resolve=True), explicit)
        if extra:
            cfg = _merge_one(base, OmegaConf.create(extra), "the model's prunefit.json")
            for layer, source in layers:
                cfg = _merge_one(cfg, layer, source)
    try:
        obj = OmegaConf.to_object(cfg)
    except PrunefitError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, PrunefitError):
            raise cause from None
        raise ConfigError(f"invalid config: {_first_line(exc)}") from None
    check = getattr(schema, "check_explicit", None)
    if check is not None:  # settings the user set that the resolved config would not read are refused
        check(obj, explicit)
    return obj  # type: ignore[return-value]


def _dotted_keys(data: Any, prefix: str = "") -> set[str]:
    """Every dotted key of a nested mapping, parents included (``{"a": {"b": 1}}`` -> {"a", "a.b"})."""
    keys: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            keys.add(prefix + str(k))
            keys |= _dotted_keys(v, f"{prefix}{k}.")
    return keys


def to_yaml(cfg: Any) -> str:
    """Serialize a dataclass config to YAML (the format ``load_config`` reads back)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_resolved_config(cfg: Any, directory: str | os.PathLike) -> Path:
    """Write ``resolved_config.yaml`` into ``directory`` (atomically) and return its path."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    out = Path(directory) / "resolved_config.yaml"
    return atomic_write_text(out, to_yaml(cfg))
