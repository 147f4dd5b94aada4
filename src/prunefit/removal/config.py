"""The ``prunefit erase`` config: which method, which concepts, and each method's own section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import TrainConfig
from prunefit.errors import ConfigError
from prunefit.removal.advunlearn.method import AdvUnlearnConfig
from prunefit.removal.concept_prune.method import ConceptPruneConfig
from prunefit.removal.esd.method import ESDConfig
from prunefit.removal.uce.method import UCEConfig


@dataclass
class RemovalSection:
    method: str = "esd"
    concepts: list[str] = field(default_factory=list)
    """Concepts to remove; copied into the method's section when that lists none."""
    reference: str = "frozen"
    """Targets from a frozen copy of the edited model (ESD) or from the unpruned teacher ('teacher')."""
    model_defaults: list[str] = field(default_factory=list)
    """Written by ``load_erase_config``: the method keys taken from the model's prunefit.json (a record)."""

    def __post_init__(self) -> None:
        if self.reference not in ("frozen", "teacher"):
            raise ConfigError(f"removal.reference must be frozen or teacher, got {self.reference!r}")


@dataclass
class EraseConfig:
    """``prunefit erase``: remove concepts from a dense model or a pruned expert."""

    model: str = "toyworld"
    student: Optional[str] = None
    """An expert folder to edit; None = the model's own UNet (saved as a diffusers pipeline)."""
    output_dir: str = "runs/erase"
    resume: Optional[str] = None
    seed: int = 0
    device: str = "cpu"
    removal: RemovalSection = field(default_factory=RemovalSection)
    esd: ESDConfig = field(default_factory=ESDConfig)
    uce: UCEConfig = field(default_factory=UCEConfig)
    concept_prune: ConceptPruneConfig = field(default_factory=ConceptPruneConfig)
    advunlearn: AdvUnlearnConfig = field(default_factory=AdvUnlearnConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(checkpoint_every=250, log_every=10))
    """Loop settings for train methods (steps and LR come from the method's section)."""

    def method_config(self):
        section = getattr(self, self.removal.method, None)
        if section is None:
            from prunefit.removal.registry import get_method

            get_method(self.removal.method)  # raises the teaching error
        if not section.concepts:
            section.concepts = list(self.removal.concepts)
        if not section.concepts:
            raise ConfigError("no concepts to remove: set removal.concepts (e.g. removal.concepts='[Claude Dots]')")
        return section
