"""The ``prunefit erase`` config: which method, which concepts, and each registered method's own section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.concepts import KINDS
from prunefit.config.schema import TrainConfig
from prunefit.config.sections import with_sections
from prunefit.errors import ConfigError
from prunefit.removal.registry import get_method, method_sections
from prunefit.utils.device import resolve_device, resolve_mixed_precision


@dataclass
class RemovalSection:
    method: str = "esd"
    concepts: list[str] = field(default_factory=list)
    """Concepts to remove; copied into the method's section when that lists none."""
    reference: str = "frozen"
    """Targets from a frozen copy of the edited model (ESD) or from the unpruned teacher ('teacher')."""
    concept_kind: Optional[str] = None
    """style, object or unsafe: the kind of the concepts, which picks the methods' settings for them
    (``prunefit.config.concepts``); None = the model's table (the toy world) or the words rule (SD: nudity words
    are unsafe, anything else a style)."""
    model_defaults: list[str] = field(default_factory=list)
    """Written by ``load_config`` (``EraseConfig.carried_defaults``): the method keys taken from the model's
    prunefit.json (a record)."""

    def __post_init__(self) -> None:
        if self.reference not in ("frozen", "teacher"):
            raise ConfigError(f"removal.reference must be frozen or teacher, got {self.reference!r}")
        if self.concept_kind is not None and self.concept_kind not in KINDS:
            raise ConfigError(f"removal.concept_kind must be one of {', '.join(KINDS)} (or null), got "
                              f"{self.concept_kind!r}")


@dataclass
class EraseConfig:
    """``prunefit erase``: remove concepts from a dense model or a pruned expert. Each registered method adds its
    section (``esd.*``, ``uce.*``, ``concept_prune.*``, ``advunlearn.*``, a plugin's) through ``registry_schema``."""

    model: str = "toyworld"
    student: Optional[str] = None
    """An expert folder to edit; None = the model's own UNet (saved as a diffusers pipeline)."""
    output_dir: str = "runs/erase"
    resume: Optional[str] = None
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    removal: RemovalSection = field(default_factory=RemovalSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(checkpoint_every=250, log_every=10))
    """Loop settings for train methods (steps and LR come from the method's section)."""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)

    @classmethod
    def registry_schema(cls) -> type:
        """This config class with a section per registered removal method added."""
        return with_sections(cls, method_sections())

    @classmethod
    def carried_defaults(cls, merged: dict, explicit: set[str]) -> dict:
        """The model's method defaults for the keys the user left unset (``load_config`` merges them)."""
        from prunefit.removal.defaults import erase_carried_defaults

        return erase_carried_defaults(merged, explicit)

    def method_config(self):
        """The chosen method's section (its defaults where this config has none), with the concepts filled in."""
        entry = get_method(self.removal.method)  # unknown methods raise the teaching error
        section = getattr(self, entry.name, None)
        if section is None:
            section = entry.config_cls()
            setattr(self, entry.name, section)
        if not section.concepts:
            section.concepts = list(self.removal.concepts)
        if not section.concepts:
            raise ConfigError("no concepts to remove: set removal.concepts (e.g. removal.concepts='[Claude Dots]')")
        return section
