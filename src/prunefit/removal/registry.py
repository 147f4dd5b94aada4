"""The removal-method registry: ``register_method(MethodEntry(...))``, ``get_method(name)``, ``list_methods()``.

A method is a folder with a config dataclass and either ``apply(ctx, cfg) -> dict`` (kind "edit": change
the UNet's weights once) or ``build_phase(ctx, cfg) -> Phase`` (kind "train": a phase the training loop
runs). Adding a method = a folder + one register call + a row in tests/test_removal_matrix.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from prunefit.utils.registry import Registry


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: str
    config_cls: type
    summary: str
    reference: str
    apply: Optional[Callable[..., dict]] = None
    build_phase: Optional[Callable[..., Any]] = None

    def __post_init__(self) -> None:
        if self.kind not in ("edit", "train"):
            raise ValueError(f"method kind must be 'edit' or 'train', got {self.kind!r}")
        edit_ok = (self.kind == "edit") == (self.apply is not None)
        if not edit_ok or (self.kind == "train") != (self.build_phase is not None):
            raise ValueError(f"method {self.name!r}: edit methods define apply, train methods build_phase")


def _load_builtin() -> None:
    from prunefit.removal import advunlearn, concept_prune, esd, uce  # noqa: F401  (each registers itself)


_METHODS: Registry[MethodEntry] = Registry("removal method", _load_builtin)


def register_method(entry: MethodEntry) -> None:
    _METHODS.register(entry.name, entry)


def get_method(name: str) -> MethodEntry:
    return _METHODS.get(name)


def list_methods() -> list[MethodEntry]:
    return _METHODS.all()
