"""What a removal method is: ``MethodEntry`` (its config class, summary, reference and ``apply`` or ``build_phase``),
``EditResult`` and the method protocols. Method folders declare ``ENTRY = MethodEntry(...)`` with these; the
registry (``removal.registry``) imports the folders, so no folder imports the registry (no import cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import torch


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
    """``build_phase(ctx, cfg, *, name, every, lr, student, freeze_others, lr_factor) -> Phase``: the phase that
    trains the method's parameter subset of ``student`` (None = ``ctx.unet``) with its own optimizer at ``lr`` (None
    = the section's) every ``every`` steps, its lr scaled by ``lr_factor(phase step)`` (None = constant; bilevel's
    upper warm-up). ``freeze_others=False`` leaves the other parameters trainable (bilevel: the lower phase trains
    them). Build it with ``training.loop.adamw_phase``."""

    def __call__(self, ctx: Any, cfg: Any, *, name: str = ..., every: int = 1, lr: Optional[float] = None,
                 student: Optional[torch.nn.Module] = None, freeze_others: bool = True,
                 lr_factor: Optional[Any] = None) -> Any: ...


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
