"""Run phases under 🤗 Accelerate: device, mixed precision, logging (TensorBoard + log.jsonl),
progress, EMA, checkpoints and exact resume. The only place (with recipes) that touches the Accelerator."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

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


class RunLogger:
    """Scalars to TensorBoard (if installed) and to log.jsonl, on the main process only."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        self.file = None
        if enabled:
            self.file = open_jsonl_append(out / "log.jsonl")  # a killed run's torn last line is dropped first
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append ``values`` at ``step`` to the JSONL log (and TensorBoard); a no-op off the main rank."""
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def record(self, entry: dict) -> None:
        """One JSON line that is not a scalar series (the run's settings)."""
        if self.enabled:
            self.file.write(json.dumps({"time": round(time.time(), 3), **entry}) + "\n")
            self.file.flush()

    def close(self) -> None:
        """Close the log file and the TensorBoard writer."""
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def ema_update(shadow: dict[str, torch.Tensor], params: Iterable[tuple[str, torch.Tensor]], decay: float,
               step: int) -> None:
    """shadow <- d * shadow + (1 - d) * param in place, d = min(decay, (1 + step) / (10 + step)) (a short warm-up);
    a parameter not in ``shadow`` yet starts it at its value."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, p in params:
            if k not in shadow:
                shadow[k] = p.detach().clone()
            else:
                shadow[k].lerp_(p.detach(), 1 - d)


@dataclass
class EMA:
    """An exponential moving average of a model's parameters (``ema_update`` each step)."""

    decay: float
    shadow: dict[str, torch.Tensor] = field(default_factory=dict)

    def update(self, model: torch.nn.Module, step: int) -> None:
        """Update the shadow weights from ``model``'s parameters after ``step``."""
        ema_update(self.shadow, model.named_parameters(), self.decay, step)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Copy the shadow weights into ``model``'s parameters, in place."""
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in self.shadow:
                    p.copy_(self.shadow[k])


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


def fit(phases: list[Phase], model: torch.nn.Module, cfg: TrainConfig, out: Path, accelerator,
        resume: Optional[Path] = None, validate: Optional[Callable[[int], dict]] = None,
        sample: Optional[Callable[[int], None]] = None, ema: Optional[EMA] = None) -> int:
    """Train ``phases`` to cfg.max_steps with logging, checkpoints (main process) and resume."""
    main = accelerator.is_main_process
    sharded = "FSDP" in str(getattr(accelerator, "distributed_type", ""))  # FSDP ranks hold different shards
    scaled = attach_grad_scalers(phases, accelerator)  # before resuming: checkpoints hold the scalers' state
    start = 0
    if resume is not None:
        state = load_checkpoint(resume, model, phases, ema.shadow if ema else None)
        start = int(state["step"])
    logger = RunLogger(out, main)
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
            sample(step)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            accelerator.wait_for_everyone()
            weights = accelerator.get_state_dict(model)  # on every rank: a collective gather where ranks hold shards
            if main:
                save_checkpoint(out, step, model, phs, ema.shadow if ema else None, keep=cfg.keep_checkpoints,
                                model_state=weights)
            accelerator.wait_for_everyone()

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
