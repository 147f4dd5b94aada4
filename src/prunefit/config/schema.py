"""Dataclass schemas of the run configs; defaults live here and are validated once in __post_init__.

Fields hold primitives only (strings, numbers, lists), so every config round-trips through YAML.
Cross-field rules and ranges are checked in ``__post_init__`` with messages in CLI spelling
(``sampler.steps must be >= 1``), so a bad value fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prunefit.errors import ConfigError

SCHEDULERS = ("pndm", "ddim", "ddpm", "euler", "euler_ancestral", "dpm_solver", "lms")
"""Sampler names accepted by ``sampler.scheduler`` (see ``prunefit.models.schedulers``)."""

DTYPES = ("float32", "float16", "bfloat16")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class SamplerConfig:
    """How images are sampled. Defaults follow the paper: PNDM, 25 steps, classifier-free guidance 7.5."""

    scheduler: str = "pndm"
    """One of pndm, ddim, ddpm, euler, euler_ancestral, dpm_solver, lms."""
    steps: int = 25
    guidance_scale: float = 7.5
    """Classifier-free guidance scale; 1.0 disables guidance (one UNet pass per step)."""
    height: Optional[int] = None
    """Image height in pixels; None = the model's native size (unet.sample_size x VAE factor)."""
    width: Optional[int] = None
    negative_prompt: str = ""
    batch_size: int = 8
    """Prompts per pipeline call (the UNet sees 2x this with guidance)."""

    def __post_init__(self) -> None:
        _check(self.scheduler in SCHEDULERS,
               f"unknown scheduler {self.scheduler!r} (sampler.scheduler); available: {list(SCHEDULERS)}")
        _check(self.steps >= 1, f"sampler.steps must be >= 1, got {self.steps}")
        _check(self.guidance_scale >= 0, f"sampler.guidance_scale must be >= 0, got {self.guidance_scale}")
        _check(self.batch_size >= 1, f"sampler.batch_size must be >= 1, got {self.batch_size}")
        for name in ("height", "width"):
            value = getattr(self, name)
            _check(value is None or (value >= 8 and value % 8 == 0),
                   f"sampler.{name} must be a multiple of 8 and >= 8, got {value}")


@dataclass
class GenerateConfig:
    """``prunefit generate``: prompts -> images/<id>.png + manifest.jsonl + grid.png."""

    model: str = "toyworld"
    """'toyworld' (the shipped toy teacher), 'tiny' (random tiny SD for smoke tests), a local diffusers
    folder, or a hub id (needs a network or a filled HF cache)."""
    output_dir: str = "runs/generate"
    prompts: list[str] = field(default_factory=list)
    """Prompts given inline; ids are their positions (00000, 00001, ...)."""
    prompt_file: Optional[str] = None
    """A .txt (one prompt a line), .csv (a 'prompt' column; optional 'id', 'seed'/'evaluation_seed')
    or .jsonl ({"prompt": ..., "id"?: ..., "seed"?: ...}) file."""
    max_prompts: Optional[int] = None
    """Use only the first N prompts."""
    seed: int = 0
    """Run seed; each prompt's seed is derived from it and the prompt id (see generation.seeds)."""
    dtype: str = "float32"
    device: str = "cpu"
    grid_max_images: int = 64
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        _check(bool(self.output_dir), "output_dir must not be empty")
        _check(self.dtype in DTYPES, f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        _check(self.max_prompts is None or self.max_prompts >= 1,
               f"max_prompts must be >= 1, got {self.max_prompts}")
        _check(self.grid_max_images >= 0, f"grid_max_images must be >= 0, got {self.grid_max_images}")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")


@dataclass
class ToyworldBuildConfig:
    """``prunefit toyworld build``: train tokenizer, VAE, judge and teacher; export into the package."""

    build_dir: str = "runs/toyworld-build"
    """Work folder with resumable checkpoints of every stage."""
    export_dir: Optional[str] = None
    """Where the finished teacher/judge/prompt sets go; None = inside the installed package."""
    seed: int = 0
    threads: int = 2
    vocab_size: int = 1024
    vae_steps: int = 1200
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    judge_steps: int = 3000
    judge_batch_size: int = 128
    teacher_steps: int = 60000
    teacher_batch_size: int = 32
    teacher_lr: float = 8e-4
    teacher_warmup: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    eval_prompts: int = 200
    """Prompts per prompt set in the quality report (the model card)."""

    def __post_init__(self) -> None:
        for name in ("vae_steps", "judge_steps", "teacher_steps", "vae_batch_size", "judge_batch_size",
                     "teacher_batch_size", "checkpoint_every", "eval_prompts", "threads"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vae_lr", "teacher_lr"):
            _check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        _check(0 <= self.caption_dropout < 1, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        _check(0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}")
