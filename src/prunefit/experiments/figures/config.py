"""The figures experiment's config: the models (rows), the prompt file (columns), seeds, sampler and layout."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import DTYPES, SamplerConfig
from prunefit.errors import ConfigError
from prunefit.generation.grid import GridStyle
from prunefit.utils.device import resolve_device

KINDS = ("auto", "pipeline", "expert", "routed")


ROLES = ("erased", "kept", "neutral")
"""Values of a prompt file's optional ``role`` column: the prompt names an erased concept, a kept one, or none."""


@dataclass
class FigureModel:
    """One row of a figure: a display name and the model behind it."""

    name: str = ""
    path: str = ""
    """A dense model ('toyworld', 'tiny', a diffusers folder, a hub id), an expert folder (expert.json), a
    `prunefit prune` output folder (routed experts), or an experiment row folder (row.json or expert/)."""
    kind: str = "auto"
    """auto (from the folder's contents), pipeline, expert or routed."""
    base_model: Optional[str] = None
    """The dense model an expert was pruned from; None = the figure's base_model."""

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.path.strip():
            raise ConfigError("every figure model needs a name and a path, e.g. models='[{name: Teacher, "
                              "path: toyworld}]'")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown figure model kind {self.kind!r} for {self.name!r}; available: {list(KINDS)}")


@dataclass
class FiguresConfig:
    """``prunefit experiment figures``: models x prompts at the same seeds -> figure.png, figure.json, index.html."""

    models: list[FigureModel] = field(default_factory=list)
    prompt_file: Optional[str] = None
    """A prompt file (.csv/.jsonl/.txt); optional columns ``seed``, ``role`` (erased/kept/neutral), ``concept``."""
    output_dir: str = "runs/figures"
    base_model: str = "toyworld"
    """The dense model experts are loaded onto (their text encoder, VAE and UNet config)."""
    erased: Optional[list[str]] = None
    """Concepts the models erased: a column is marked when its ``concept`` (or, without one, its prompt) names
    one. None = mark the rows whose ``role`` is 'erased'; [] = mark nothing."""
    max_prompts: Optional[int] = None
    seed: int = 0
    """Run seed for prompts without a fixed ``seed`` (each prompt's seed is derived from it and the prompt id)."""
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    dtype: str = "float32"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    cell: int = 192
    """Cell side in figure.png, pixels (index.html shows images at their own size, small ones enlarged)."""
    label_width: int = 170
    caption_lines: int = 4
    font_size: int = 15

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if not self.models:
            raise ConfigError("no models: set models='[{name: Teacher, path: toyworld}, {name: Ours, path: DIR}]'")
        if not self.prompt_file:
            raise ConfigError("no prompt_file: e.g. prompt_file=configs/toyworld/prompts/"
                              "table6_fig6_erasure_after_pruning.csv")
        slugs = [model_slug(m.name) for m in self.models]
        dup = sorted({s for s in slugs if slugs.count(s) > 1})
        if dup:
            raise ConfigError(f"figure model names must differ (as folder names): {dup} appear twice")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ConfigError(f"max_prompts must be >= 1, got {self.max_prompts}")
        self.style()  # validates the geometry

    def style(self) -> GridStyle:
        """The grid style these settings ask for (an invalid one is a ConfigError)."""
        try:
            return GridStyle(cell=self.cell, label_width=self.label_width, caption_lines=self.caption_lines,
                             font_size=self.font_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def model_slug(name: str) -> str:
    """A model's folder name ("Distilled + ESD" -> "distilled-esd")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"

