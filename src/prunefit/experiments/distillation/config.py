"""The distillation ablation's config: the loss variants, the student's start, and the fine-tuning, evaluation,
seed and precondition settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import DataConfig, FinetuneLoss, TrainConfig
from prunefit.errors import ConfigError
from prunefit.toyworld.prompts import FJD_SETS
from prunefit.utils.device import resolve_device, resolve_mixed_precision

VARIANTS = {"ddpm": (1.0, 0.0, 0.0), "output_kd": (0.0, 2.0, 0.0), "feature_kd": (0.0, 0.0, 0.1),
            "output+feature": (0.0, 2.0, 0.1), "all": (1.0, 2.0, 0.1)}
"""Loss weights (ddpm, output_kd, feature_kd) of each ablation variant."""


@dataclass
class DistillationConfig:
    model: str = "toyworld"
    expert: Optional[str] = None
    """The student; None = prune the teacher (``prune_method`` at ``target`` of its MACs; APTP: ``prune_steps``
    router steps, 4 experts), expert 0."""
    prune_method: str = "aptp"
    """aptp or magnitude (when ``expert`` is None)."""
    target: float = 0.8
    """Fraction of the teacher's UNet MACs the pruned student keeps (when ``expert`` is None)."""
    prune_steps: int = 300
    predistill_steps: int = 0
    """Steps of output + feature distillation from the teacher (weights 0 / 2 / 0.1) on ``predistill_data`` that
    repair the pruned student before any variant starts: every variant's shared start (0 = none)."""
    predistill_data: DataConfig = field(default_factory=DataConfig)
    """The pre-distillation's data (default: the teacher's own mix)."""
    output_dir: str = "runs/distillation"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    steps: int = 400
    eval_every: int = 100
    eval_prompts: int = 200
    """Prompts judged per evaluation set (its first rows)."""
    eval_sets: list[str] = field(default_factory=lambda: ["toy-val"])
    """The prompt sets judged (FJD against ground-truth renders, fidelity): toy-val, toy-world, toy-narrow."""
    judge_teacher: bool = False
    """Also judge the teacher and the start on every evaluation set, and check the regime's preconditions: the
    teacher beats the DDPM-only student by ``min_teacher_gain`` in FJD on ``check_set``, and the distilled student
    (``distilled_variant``) beats the DDPM-only one."""
    check_set: str = "toy-world"
    min_teacher_gain: float = 1.5
    distilled_variant: str = "all"
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
        if self.prune_method not in ("aptp", "magnitude") or not 0 < self.target <= 1:
            raise ConfigError(f"prune_method must be aptp or magnitude and target in (0, 1], got "
                              f"{self.prune_method!r} at {self.target}")
        if self.predistill_steps < 0:
            raise ConfigError(f"predistill_steps must be >= 0 (0 = none), got {self.predistill_steps}")
        bad = [s for s in self.eval_sets if s not in FJD_SETS]
        if bad or not self.eval_sets:
            raise ConfigError(f"eval_sets must name prompt sets of {list(FJD_SETS)}, got {self.eval_sets}")
        if self.judge_teacher and (self.check_set not in self.eval_sets or self.min_teacher_gain <= 0
                                   or not {"ddpm", self.distilled_variant} <= set(self.variants)):
            raise ConfigError(f"judge_teacher checks the preconditions: check_set ({self.check_set}) must be one of "
                              f"eval_sets, min_teacher_gain > 0, and variants must hold ddpm and "
                              f"distilled_variant ({self.distilled_variant})")

    def eval_steps(self) -> list[int]:
        """The steps evaluated: every ``eval_every`` steps, and the last."""
        return sorted({*range(self.eval_every, self.steps + 1, self.eval_every), self.steps})
