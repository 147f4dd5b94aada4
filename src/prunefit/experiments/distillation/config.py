"""The distillation ablation's config: the loss variants and the fine-tuning, evaluation and seed settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import DataConfig, FinetuneLoss, TrainConfig
from prunefit.errors import ConfigError
from prunefit.utils.device import resolve_device, resolve_mixed_precision

VARIANTS = {"ddpm": (1.0, 0.0, 0.0), "output_kd": (0.0, 2.0, 0.0), "feature_kd": (0.0, 0.0, 0.1),
            "output+feature": (0.0, 2.0, 0.1), "all": (1.0, 2.0, 0.1)}
"""Loss weights (ddpm, output_kd, feature_kd) of each ablation variant."""


@dataclass
class DistillationConfig:
    model: str = "toyworld"
    expert: Optional[str] = None
    """The student; None = APTP-prune the teacher (``prune_steps`` router steps, 4 experts at 0.8 MACs), expert 0."""
    prune_steps: int = 300
    output_dir: str = "runs/distillation"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    steps: int = 400
    eval_every: int = 100
    eval_prompts: int = 200
    threads: int = 1
    n_boot: int = 200
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(toy_p_unsafe=0.01, toy_p_artist=0.05))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=20, micro_batch_size=8,
                                                                   log_every=10))
    loss: FinetuneLoss = field(default_factory=FinetuneLoss)
    """Everything but the three weights, which each variant sets."""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"unknown distillation variants {bad}; available: {list(VARIANTS)}")
        if self.steps < 1 or self.eval_every < 1 or self.eval_prompts < 2 or not self.seeds:
            raise ConfigError("steps and eval_every must be >= 1, eval_prompts >= 2, seeds non-empty")

    def eval_steps(self) -> list[int]:
        """The steps evaluated: every ``eval_every`` steps, and the last."""
        return sorted({*range(self.eval_every, self.steps + 1, self.eval_every), self.steps})

