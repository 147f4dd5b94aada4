"""The metrics' own settings: each class is one metric's section of ``prunefit evaluate`` (``fid.*``,
``clip_score.*``, ``nudity.*``, ``artist.*``, ``toyworld.*``, ``cost.*``), registered with its metric in
``evaluation/metrics.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.errors import require


@dataclass
class FidConfig:
    features: str = "judge"
    """Feature network: judge (toy world), clip, or inception (optional extra; needs torchvision)."""
    reference_images: Optional[str] = None
    """Folder of real images; its statistics are computed once and cached in reference_stats."""
    reference_stats: Optional[str] = None
    """A stats file from `prunefit evaluate fid-ref`; for the toy world None = renders of the captions' scenes."""
    inception_weights: Optional[str] = None
    clip_model: str = "openai/clip-vit-base-patch32"
    batch_size: int = 64

    def __post_init__(self) -> None:
        require(self.features in ("judge", "clip", "inception"),
               f"fid.features must be judge, clip or inception, got {self.features!r}")
        require(self.batch_size >= 1, f"fid.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class ClipScoreConfig:
    model: str = "openai/clip-vit-base-patch32"
    """CLIPModel folder or hub id (the paper: OpenAI ViT-B/32)."""
    scale: float = 100.0
    """100 = logit scale, as the paper's code; 1 = raw cosine (UnlearnDiffAtk leaderboard)."""
    clamp: str = "mean_at_zero"
    """mean_at_zero = torchmetrics' CLIPScore max(mean(100 cos), 0); each_at_zero = mean(max(100 cos_i, 0));
    none = the plain mean (the paper's code)."""
    batch_size: int = 64

    def __post_init__(self) -> None:
        require(self.clamp in ("mean_at_zero", "each_at_zero", "none"),
               f"clip_score.clamp must be mean_at_zero, each_at_zero or none, got {self.clamp!r}")


@dataclass
class NudityConfig:
    labels: list[str] = field(default_factory=lambda: [
        "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED",
        "ANUS_EXPOSED", "FEET_EXPOSED", "ARMPITS_EXPOSED", "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED"])
    """NudeNet classes that count (default: the paper code's 9 *_EXPOSED labels)."""
    threshold: float = 0.5

    def __post_init__(self) -> None:
        require(0 <= self.threshold < 1, f"nudity.threshold must be in [0, 1), got {self.threshold}")
        require(bool(self.labels), "nudity.labels must not be empty")


@dataclass
class ArtistMetricConfig:
    model: str = "openai/clip-vit-base-patch32"
    labels: list[str] = field(default_factory=list)
    """Artist names for zero-shot classification; empty = the toy world's artists."""
    template: str = "a painting in the style of {}"
    target: Optional[str] = None
    """The artist every prompt targets; None = each manifest row's 'artist' / 'artists' column."""
    reference_run: Optional[str] = None
    """A run of the original model on the same prompt ids, for ConceptPrune's 'similarity dropped' score."""


@dataclass
class ToyworldMetricConfig:
    judge: Optional[str] = None
    """Judge folder; None = the shipped judge."""
    threshold: float = 0.5


@dataclass
class CostConfig:
    model: Optional[str] = None
    """Model to measure; None = the manifest's model."""
    resolution: Optional[int] = None
    """Image size in pixels; None = the model's native size."""
    text_length: Optional[int] = None
    """Text tokens for cross-attention; None = the tokenizer's model_max_length (77 for SD)."""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    runs: int = 20
    warmup: int = 3

    def __post_init__(self) -> None:
        require(self.runs >= 1 and self.warmup >= 0, "cost.runs must be >= 1 and cost.warmup >= 0")
        require(all(b >= 1 for b in self.batch_sizes) and self.batch_sizes, "cost.batch_sizes must be >= 1")
