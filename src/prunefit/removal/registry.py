"""The removal-method registry: ``register_method(MethodEntry(...))``, ``get_method(name)``, ``list_methods()``.

A method is a folder with a config dataclass and either ``apply(ctx, cfg) -> EditResult`` (kind "edit": change
the UNet's weights once) or ``build_phase(ctx, cfg, *, ...) -> Phase`` (kind "train": a phase the training loop
runs; the ``TrainMethod`` protocol below). The entry owns its config class: ``erase`` and ``bilevel`` take their
method sections (``<name>.key=value``) from this registry. Adding a method = a folder with its ``ENTRY`` + its
name in ``_load_builtin`` + a row in tests/test_removal_matrix.py. A plug-in package declares an entry point in
the group ``prunefit.methods`` naming its ``MethodEntry`` (or a callable that calls ``register_method``); it is
loaded after the built-ins. The folders never import this registry (it imports them), so there is no import cycle.
"""

from __future__ import annotations

from typing import Optional

from prunefit.removal.entry import (  # noqa: F401  (re-exported: the names a method or plugin uses)
    EditMethod,
    EditResult,
    MethodConfig,
    MethodEntry,
    TrainMethod,
    TrainMethodConfig,
)
from prunefit.utils.registry import Registry


def _load_builtin() -> None:
    from prunefit.removal import advunlearn, concept_prune, esd, uce

    for folder in (advunlearn, concept_prune, esd, uce):
        register_method(folder.ENTRY)


_METHODS: Registry[MethodEntry] = Registry("removal method", _load_builtin, group="prunefit.methods",
                                           entry_type=MethodEntry)


def register_method(entry: MethodEntry) -> None:
    """Add a removal method to the registry under its name."""
    _METHODS.register(entry.name, entry)


def unregister_method(name: str) -> None:
    """Remove a registered method (a plugin's or a test's); unknown names raise the teaching error."""
    _METHODS.unregister(name)


def get_method(name: str) -> MethodEntry:
    """The registered removal method ``name`` (an error lists the available ones)."""
    return _METHODS.get(name)


def list_methods(kind: Optional[str] = None) -> list[MethodEntry]:
    """Every registered method (of ``kind`` "edit" or "train" when given), by name."""
    return [m for m in _METHODS.all() if kind is None or m.kind == kind]


def listing() -> list[str]:
    """``prunefit list methods``: one line per method (name, kind, summary, reference)."""
    return [f"{m.name:14s} [{m.kind}] {m.summary}  ({m.reference})" for m in list_methods()]


def method_sections(kind: Optional[str] = None) -> list[tuple[str, type]]:
    """``(name, config class)`` of every registered method (of ``kind``): the sections of erase / bilevel."""
    return [(m.name, m.config_cls) for m in list_methods(kind)]
