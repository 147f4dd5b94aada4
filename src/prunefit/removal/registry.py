"""The removal-method registry: ``register_method(MethodEntry(...))``, ``get_method(name)``, ``list_methods()``.

A method is a folder with a config dataclass and either ``apply(ctx, cfg) -> EditResult`` (kind "edit": change
the UNet's weights once) or ``build_phase(ctx, cfg, *, ...) -> Phase`` (kind "train": a phase the training loop
runs; the ``TrainMethod`` protocol below). The entry owns its config class: ``erase`` and ``bilevel`` take their
method sections (``<name>.key=value``) from this registry. Adding a method = a folder + one register call + a row
in tests/test_removal_matrix.py; nothing else names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch

from prunefit.utils.registry import Registry


@dataclass
class EditResult:
    """What an edit method did: ``info`` goes into erase_summary.json; each ``tensors`` entry is saved beside the
    edited model as ``<key>.safetensors`` (e.g. ConceptPrune's ``masks``)."""

    info: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


class MethodConfig(Protocol):
    """Every method section has the concepts it removes (``erase`` fills them from ``removal.concepts``)."""

    concepts: list[str]


class TrainMethodConfig(MethodConfig, Protocol):
    """A train method's section also sets its own budget: ``erase`` runs ``iterations`` steps at ``lr``; the
    bilevel upper step reads ``batch_size``."""

    iterations: int
    lr: float
    batch_size: int


class EditMethod(Protocol):
    def __call__(self, ctx: Any, cfg: Any) -> EditResult: ...


class TrainMethod(Protocol):
    """``build_phase(ctx, cfg, *, name, every, lr, student, freeze_others) -> Phase``: the phase that trains the
    method's parameter subset of ``student`` (None = ``ctx.unet``) with its own optimizer at ``lr`` (None = the
    section's) every ``every`` steps. ``freeze_others=False`` leaves the other parameters trainable (bilevel: the
    lower phase trains them)."""

    def __call__(self, ctx: Any, cfg: Any, *, name: str = ..., every: int = 1, lr: Optional[float] = None,
                 student: Optional[torch.nn.Module] = None, freeze_others: bool = True) -> Any: ...


def _unet(cfg: Any) -> str:
    return "unet"


def _no_check(cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: str
    config_cls: type
    summary: str
    reference: str
    apply: Optional[EditMethod] = None
    build_phase: Optional[TrainMethod] = None
    trained_module: Callable[[Any], str] = _unet
    """Which component the method changes for a config: "unet" or "text_encoder" (saved with the expert)."""
    check: Callable[[Any], None] = _no_check
    """Checks of a resolved section that must wait for the model's carried defaults (so not in the config's
    __post_init__); ``erase`` and ``bilevel`` run them before they write anything."""

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


def unregister_method(name: str) -> None:
    """Remove a registered method (a plugin's or a test's); unknown names raise the teaching error."""
    _METHODS.unregister(name)


def get_method(name: str) -> MethodEntry:
    return _METHODS.get(name)


def list_methods(kind: Optional[str] = None) -> list[MethodEntry]:
    """Every registered method (of ``kind`` "edit" or "train" when given), by name."""
    return [m for m in _METHODS.all() if kind is None or m.kind == kind]


def method_sections(kind: Optional[str] = None) -> list[tuple[str, type]]:
    """``(name, config class)`` of every registered method (of ``kind``): the sections of erase / bilevel."""
    return [(m.name, m.config_cls) for m in list_methods(kind)]
