"""Run phases under 🤗 Accelerate: device, mixed precision, logging (log.jsonl + accelerate's trackers: TensorBoard,
wandb, ...), progress, EMA (diffusers' EMAModel), checkpoints and exact resume. The only place (with recipes) that
touches the Accelerator."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

from prunefit.config.schema import TrainConfig
from prunefit.data.loader import close_all
from prunefit.errors import ConfigError, OutputError, PrunefitError
from prunefit.training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from prunefit.training.loop import Phase, train
from prunefit.utils.device import launched_rank, resolve_mixed_precision
from prunefit.utils.io import open_jsonl_append


def make_accelerator(cfg: TrainConfig, device: str):
    """The run's Accelerator on ``device`` (a resolved device string: its device is the one every component is then
    loaded on, see ``run_device``); refuses any FSDP launch and an explicit GPU other than a launched rank's own."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    dev = torch.device(device)
    resolve_trackers(cfg.report_to)  # a tracker whose package is missing fails here, before anything loads
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    check_launch_device(device, world, launched_rank(), torch.cuda.device_count() if dev.type == "cuda" else 0)
    if dev.type == "cuda" and dev.index is not None and world == 1:
        torch.cuda.set_device(dev.index)  # accelerate's single-process device is the current GPU
    set_backend_flags(cfg, dev.type)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False, gradient_as_bucket_view=True)
    try:
        accelerator = Accelerator(cpu=dev.type == "cpu", kwargs_handlers=[ddp],
                                  mixed_precision=resolve_mixed_precision(cfg.mixed_precision, device))
    except RuntimeError as exc:  # FSDP1's plugin on a machine without GPUs: "no available devices found ..."
        if not _fsdp_requested():
            raise
        raise _fsdp_refused(f"refuses it ({str(exc).splitlines()[0]})") from exc
    got = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if _fsdp_requested() and got != "FSDP":  # FSDP2 on CPUs: accelerate silently keeps full replicas
        raise _fsdp_refused(f"runs it as {'one unsharded process' if got == 'NO' else got + ' (full replicas)'} on "
                            f"{accelerator.device.type}")
    if got == "FSDP":  # sharded checkpoints, EMA and per-phase parameter lists are not verified on a GPU run yet
        raise ConfigError("an FSDP launch was requested but prunefit does not support FSDP yet (not verified on a "
                          "GPU run); drop the FSDP config to train data-parallel (`accelerate launch` / `torchrun "
                          "--nproc_per_node N -m prunefit ...`)")
    return accelerator


def check_launch_device(device: str, world: int, local_rank: Optional[int], gpus: int) -> None:
    """Under a multi-process launch each rank trains on its own GPU (cuda:<LOCAL_RANK>); refuse an explicit other."""
    dev = torch.device(device)
    if world <= 1 or dev.type != "cuda" or dev.index is None or local_rank is None or gpus < 1:
        return
    if dev.index != local_rank % gpus:
        raise ConfigError(f"device={device} but process {local_rank} of this {world}-process launch runs on "
                          f"cuda:{local_rank % gpus}; use device=auto under accelerate launch")


def set_backend_flags(cfg: TrainConfig, device_type: str) -> None:
    """TF32 matmuls / cuDNN convolutions and cuDNN autotuning as ``cfg`` asks, on CUDA (no-ops elsewhere)."""
    if device_type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = cfg.allow_tf32
    torch.backends.cudnn.allow_tf32 = cfg.allow_tf32
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark


def run_device(accelerator) -> torch.device:
    """The device this process trains on, with its index (accelerate's single-GPU device is plain ``cuda``): every
    component is loaded here, so the student accelerate moves and the frozen models share one device."""
    dev = torch.device(accelerator.device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def run_settings(accelerator, cfg: TrainConfig) -> dict:
    """The effective device and speed settings of this run (recorded once in log.jsonl and the run's summary)."""
    dev = run_device(accelerator)
    cuda = dev.type == "cuda"
    return {"device": str(dev), "mixed_precision": str(accelerator.mixed_precision),
            "grad_scaler": str(accelerator.mixed_precision) == "fp16",
            "allow_tf32": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
            "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
            "channels_last": cfg.channels_last, "compile": cfg.compile, "world_size": accelerator.num_processes}


def prepare_model(accelerator, phase: Phase, model: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``model`` for data parallelism (DDP) as ``phase.model``; refuses a wrapper that replaced the parameters
    the phase's optimizer and clipping hold (they would update stale tensors)."""
    wrapped = accelerator.prepare(model)
    live = {id(p) for p in wrapped.parameters()}
    if not all(id(p) in live for p in phase.params):
        raise ConfigError(f"accelerate's {accelerator.distributed_type} wrapper replaced the parameters of phase "
                          f"{phase.name!r}; train data-parallel (DDP) instead")
    phase.model = wrapped
    return wrapped


def attach_grad_scalers(phases: list[Phase], accelerator) -> bool:
    """fp16: one loss scaler per phase (each optimizer skips its own overflow steps); returns whether any is used."""
    if str(accelerator.mixed_precision) != "fp16":
        return False
    for ph in phases:
        if ph.scaler is None:
            ph.scaler = torch.amp.GradScaler(run_device(accelerator).type)
    return True


def _fsdp_requested() -> bool:
    """An accelerate FSDP config (or ``ACCELERATE_USE_FSDP``) was given to this launch (read as accelerate reads it)."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def _fsdp_refused(what: str) -> ConfigError:
    """accelerate 1.15 shards only on GPU-like devices; an FSDP launch it does not honour would hide the memory the
    user launched FSDP to save."""
    import accelerate

    return ConfigError(f"an FSDP launch was requested but accelerate {accelerate.__version__} {what}: it shards only "
                       "on GPUs; launch there, or drop the FSDP config to train data-parallel (`torchrun "
                       "--nproc_per_node N -m prunefit ...` on CPUs)")


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet-ml", "aim": "aim",
                    "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}
"""The pip package of each accelerate tracker."""


def resolve_trackers(report_to: str) -> list[str]:
    """The accelerate trackers ``train.report_to`` names (``all``: every installed one; ``none``: none); a named
    tracker whose package is missing is refused in one line, except the default TensorBoard, which is skipped
    (log.jsonl only) as it always was."""
    from accelerate.tracking import get_available_trackers

    installed = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if "all" in names:
        return installed
    missing = [n for n in names if n not in installed and n not in ("none", "tensorboard")]
    if missing:
        raise ConfigError(f"train.report_to={missing[0]} needs the {TRACKER_PACKAGES.get(missing[0], missing[0])} "
                          f"package (pip install {TRACKER_PACKAGES.get(missing[0], missing[0])}); installed "
                          f"trackers: {installed}")
    return [n for n in names if n in installed]


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A (nested) config dataclass as one flat dict of ``section.key`` -> bool / int / float / str (lists and None as
    JSON text), the form every tracker's hyperparameter record takes."""
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
    return out


def start_trackers(report_to: str, out: Path, config: dict) -> list:
    """Start ``report_to``'s accelerate trackers (call on the main process) with the run's ``config``: TensorBoard
    writes ``out``/tensorboard as before, wandb names its run after ``out`` (project prunefit), the others get ``out``
    as their logging folder. These are the tracker classes ``Accelerator(log_with=...)`` builds, started, logged to
    and finished as ``init_trackers`` / ``log`` / ``end_training`` do, but held here rather than by the Accelerator:
    that is built before the output folder is known (a launch it refuses fails before anything loads), its
    ``init_trackers`` puts TensorBoard in ``<logging_dir>/<project name>`` (the wandb project's name too), and
    ``end_training`` also destroys the process group, which a launched process still needs after ``fit``."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    trackers = []
    for name in resolve_trackers(report_to):
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name in ("tensorboard", "wandb"):
            tracker = cls("tensorboard", str(out)) if name == "tensorboard" else cls("prunefit", name=out.name,
                                                                                     dir=str(out))
        else:
            tracker = cls("prunefit", str(out)) if cls.requires_logging_directory else cls("prunefit")
        tracker.start()
        tracker.store_init_configuration(config)
        trackers.append(tracker)
    return trackers


class RunLogger:
    """Scalars to log.jsonl and to accelerate's trackers (``train.report_to``), images to those that take images
    (TensorBoard, wandb); on the main process only."""

    def __init__(self, out: Path, enabled: bool, report_to: str = "tensorboard", config: Optional[dict] = None) -> None:
        self.enabled = enabled
        self.file = None
        self.trackers: list = []
        if enabled:
            self.file = open_jsonl_append(out / "log.jsonl")  # a killed run's torn last line is dropped first
            self.trackers = start_trackers(report_to, out, config or {})
            if "tensorboard" in report_to and not any(t.name == "tensorboard" for t in self.trackers):
                print("note: tensorboard is not installed (pip install tensorboard): logging to log.jsonl only")

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append ``values`` at ``step`` to the JSONL log and the trackers; a no-op off the main rank."""
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        for tracker in self.trackers:
            tracker.log({k: float(v) for k, v in values.items()}, step=step)

    def log_image(self, tag: str, image, step: int) -> None:
        """Log a PIL ``image`` at ``step`` to the trackers that take images (TensorBoard, wandb)."""
        for tracker in self.trackers:
            if tracker.name == "tensorboard":
                import numpy as np

                tracker.tracker.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
                tracker.tracker.flush()
            elif tracker.name == "wandb":
                import wandb

                tracker.tracker.log({tag: wandb.Image(image)}, step=step)

    def record(self, entry: dict) -> None:
        """One JSON line that is not a scalar series (the run's settings)."""
        if self.enabled:
            self.file.write(json.dumps({"time": round(time.time(), 3), **entry}) + "\n")
            self.file.flush()

    def close(self) -> None:
        """Close the log file and finish the trackers."""
        if self.file:
            self.file.close()
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def ema_update(shadow: dict[str, torch.Tensor], params: Iterable[tuple[str, torch.Tensor]], decay: float,
               step: int) -> None:
    """shadow <- shadow - (1 - d) * (shadow - param) in place, d = min(decay, (1 + step) / (10 + step)) (a short
    warm-up): diffusers' EMAModel decay and arithmetic, bit for bit (``EMA``); a parameter not in ``shadow`` yet
    starts it at its value. Kept by hand for the toy-world teacher, whose EMA spans two modules in one name-keyed
    dict (its checkpoint format) and is updated from step 0 (EMAModel's first update copies: decay 0)."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, p in params:
            if k not in shadow:
                shadow[k] = p.detach().clone()
            else:
                shadow[k].sub_((1 - d) * (shadow[k] - p.detach()))


class EMA:
    """An exponential moving average of a model's parameters: diffusers' ``EMAModel`` (default schedule, no
    warm-up: d = min(decay, (1 + step) / (10 + step)), ``ema_update``'s), built at the first update from the
    model's weights then (the shadow starts at them, as ``ema_update``'s does), its counter keyed to the global
    step so a resumed run continues on the same schedule."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.names: list[str] = []
        self.model = None  # diffusers.training_utils.EMAModel, from the first update or a checkpoint

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The shadow weights by parameter name (what checkpoints store in ema.safetensors)."""
        return dict(zip(self.names, self.model.shadow_params)) if self.model is not None else {}

    def _build(self, model: torch.nn.Module, shadow: Optional[dict[str, torch.Tensor]] = None) -> list:
        from diffusers.training_utils import EMAModel

        named = list(model.named_parameters())
        self.names = [k for k, _ in named]
        self.model = EMAModel([p for _, p in named], decay=self.decay)
        if shadow:  # a parameter the checkpoint lacks starts at its value
            self.model.shadow_params = [shadow[k].to(p.device) if k in shadow else s
                                        for (k, p), s in zip(named, self.model.shadow_params)]
        return [p for _, p in named]

    def update(self, model: torch.nn.Module, step: int) -> None:
        """Update the shadow weights from ``model``'s parameters after global ``step``."""
        params = self._build(model) if self.model is None else [p for _, p in model.named_parameters()]
        self.model.optimization_step = step  # step() counts on to step + 1: get_decay(step + 1) is ema_update's d
        self.model.step(params)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Copy the shadow weights into ``model``'s parameters, in place."""
        if self.model is not None:
            self.model.copy_to(model.parameters())

    def state_dict(self) -> dict:
        """EMAModel's state without its tensors (those go to ema.safetensors by name)."""
        return {k: v for k, v in self.model.state_dict().items() if k != "shadow_params"} if self.model else {}

    def load(self, model: torch.nn.Module, shadow: dict[str, torch.Tensor], state: Optional[dict]) -> None:
        """Restore from a checkpoint's shadow weights and EMAModel state (absent in checkpoints written before
        EMAModel: the counter is set from the step at each update anyway)."""
        if not shadow:
            return
        self._build(model, shadow)
        if state:
            self.model.load_state_dict({**state, "decay": self.decay, "shadow_params": None})  # the config wins


class RankDivergenceError(PrunefitError):
    """Processes of one data-parallel run hold different weights."""


def check_ranks_agree(model: torch.nn.Module, step: int) -> bool:
    """Raise if any process holds weights different from the others (exact: data-parallel ranks apply the
    same averaged update). Compares per-parameter float64 sums and sums of squares with one MAX and one MIN
    all-reduce, so it is cheap enough to run at every logging step. Returns whether a check ran."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    params = [p.detach() for p in model.parameters()]
    stats = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).flatten()
    hi, lo = stats.clone(), stats.clone()
    dist.all_reduce(hi, dist.ReduceOp.MAX)
    dist.all_reduce(lo, dist.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        names = [n for n, _ in model.named_parameters()]
        first = names[int((hi != lo).nonzero()[0]) // 2]
        raise RankDivergenceError(f"step {step}: processes hold different weights (first: {first}); a phase "
                                  "updated parameters without averaging gradients across processes")
    return True


def resolve_resume(out: Path, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint to resume from, or None; refuses to silently restart over existing checkpoints."""
    if resume is None:
        if latest_checkpoint(out) is not None:
            raise OutputError(f"{out} already has checkpoints; pass resume=latest to continue, or use a new "
                              "output_dir (nothing was overwritten)")
        return None
    path = latest_checkpoint(out) if resume == "latest" else Path(resume)
    if path is None:
        raise CheckpointError(f"resume=latest but {out / 'checkpoints'} holds no complete checkpoint")
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no state.json)")
    return path


def report_effective_batch(accelerator, micro_batch: int, accum: int, log: Callable[[str], None] = print) -> int:
    """Per-device batch x processes x accumulation, printed once by the main process."""
    effective = micro_batch * accelerator.num_processes * accum
    if accelerator.is_main_process:
        log(f"effective batch = {micro_batch} per device x {accelerator.num_processes} process(es) x {accum} "
            f"accumulation = {effective}")
    return effective


def _resume(path: Path, model: torch.nn.Module, phases: list[Phase], ema: Optional[EMA]) -> int:
    """Restore a checkpoint (model, optimizers, scalers, EMA) into this run; returns its global step."""
    shadow: dict[str, torch.Tensor] = {}
    state = load_checkpoint(path, model, phases, shadow if ema else None)
    if ema is not None:
        ema.load(model, shadow, state.get("ema"))
    return int(state["step"])


def _checkpoint(accelerator, out: Path, step: int, model: torch.nn.Module, phases: list[Phase],
                ema: Optional[EMA], keep: int) -> None:
    """Every rank gathers the weights (a collective where ranks hold shards); rank 0 writes the checkpoint."""
    accelerator.wait_for_everyone()
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        save_checkpoint(out, step, model, phases, ema.shadow if ema else None, keep=keep, model_state=weights,
                        extra={"ema": ema.state_dict()} if ema else None)
    accelerator.wait_for_everyone()


def fit(phases: list[Phase], model: torch.nn.Module, cfg: TrainConfig, out: Path, accelerator,
        resume: Optional[Path] = None, validate: Optional[Callable[[int], dict]] = None,
        sample: Optional[Callable[[int], Any]] = None, ema: Optional[EMA] = None, run_config: Any = None) -> int:
    """Train ``phases`` to cfg.max_steps with logging, checkpoints (main process) and resume. ``sample(step)`` may
    return an image (logged to the trackers that take images); ``run_config`` (default ``cfg``) is the resolved
    config the trackers record."""
    main = accelerator.is_main_process
    sharded = "FSDP" in str(getattr(accelerator, "distributed_type", ""))  # FSDP ranks hold different shards
    scaled = attach_grad_scalers(phases, accelerator)  # before resuming: checkpoints hold the scalers' state
    start = _resume(resume, model, phases, ema) if resume is not None else 0
    logger = RunLogger(out, main, cfg.report_to, flat_config(run_config if run_config is not None else cfg))
    settings = run_settings(accelerator, cfg)
    logger.record({"step": start, "settings": settings})
    if main:
        print("run: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step", disable=not main, mininterval=2)
    t_last, s_last = time.time(), start

    def on_step_end(step: int, phs: list[Phase]) -> None:
        """After ``step``: update the EMA, log the phases' losses and rates, and validate and sample when due."""
        nonlocal t_last, s_last
        if ema is not None:
            ema.update(model, step)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            ran = [ph for ph in phs if ph.runs_at(step - 1)]  # no stale values of phases that skipped this step
            values = {f"{ph.name}/{k}": float(v) for ph in ran for k, v in ph.last.items()}
            values.update({f"{ph.name}/lr": ph.optimizer.param_groups[0]["lr"] for ph in ran})
            values.update({f"{ph.name}/{k[4:]}": float(v) for ph in ran  # a controller's state (bilevel dual)
                           for k, v in ph.optimizer.param_groups[0].items() if k.startswith("log_") and v is not None})
            now = time.time()
            values["steps_per_s"] = (step - s_last) / max(now - t_last, 1e-9)
            if not sharded and check_ranks_agree(model, step):
                values["ranks_agree"] = 1.0
            t_last, s_last = now, step
            logger.log(step, values)
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in values.items() if k.endswith("/total")})
        if validate is not None and cfg.val_every and step % cfg.val_every == 0:
            logger.log(step, validate(step))
        if sample is not None and cfg.sample_every and step % cfg.sample_every == 0 and main:
            image = sample(step)
            if image is not None:
                logger.log_image("samples", image, step)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            _checkpoint(accelerator, out, step, model, phs, ema, cfg.keep_checkpoints)

    try:
        # fp16: each phase scales its own loss (accelerate's one scaler would scale it a second time)
        backward = (lambda loss: loss.backward()) if scaled else accelerator.backward
        final = train(phases, cfg.max_steps, start, backward=backward,
                      rank=accelerator.process_index, world=accelerator.num_processes,
                      autocast=accelerator.autocast, check_finite_every=1 if accelerator.device.type == "cpu"
                      else cfg.log_every, on_step_end=on_step_end, progress=lambda s: bar.update(1))
    finally:
        bar.close()
        logger.close()
        close_all()  # the data workers of this run's prefetchers (validation may start them again)
    return final
