"""Run phases under 🤗 Accelerate: device, mixed precision, logging (TensorBoard + log.jsonl),
progress, EMA, checkpoints and exact resume. The only place (with recipes) that touches the Accelerator."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

from prunefit.config.schema import TrainConfig
from prunefit.errors import ConfigError, OutputError, PrunefitError
from prunefit.training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from prunefit.training.loop import Phase, train


def make_accelerator(cfg: TrainConfig, device: str):
    """The run's Accelerator; refuses an FSDP launch that accelerate would silently run as plain data parallel."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    try:
        accelerator = Accelerator(cpu=device == "cpu", mixed_precision=cfg.mixed_precision,
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    except RuntimeError as exc:  # FSDP1's plugin on a machine without GPUs: "no available devices found ..."
        if not _fsdp_requested():
            raise
        raise _fsdp_refused(f"refuses it ({str(exc).splitlines()[0]})") from exc
    got = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if _fsdp_requested() and got != "FSDP":  # FSDP2 on CPUs: accelerate silently keeps full replicas
        raise _fsdp_refused(f"runs it as {'one unsharded process' if got == 'NO' else got + ' (full replicas)'} on "
                            f"{accelerator.device.type}")
    return accelerator


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
            self.file = (out / "log.jsonl").open("a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
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
        ema_update(self.shadow, model.named_parameters(), self.decay, step)

    def copy_to(self, model: torch.nn.Module) -> None:
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
    start = 0
    if resume is not None:
        state = load_checkpoint(resume, model, phases, ema.shadow if ema else None)
        start = int(state["step"])
    logger = RunLogger(out, main)
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step", disable=not main, mininterval=2)
    t_last, s_last = time.time(), start

    def on_step_end(step: int, phs: list[Phase]) -> None:
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
            if main:
                save_checkpoint(out, step, model, phs, ema.shadow if ema else None, keep=cfg.keep_checkpoints)
            accelerator.wait_for_everyone()

    try:
        final = train(phases, cfg.max_steps, start, backward=accelerator.backward,
                      rank=accelerator.process_index, world=accelerator.num_processes,
                      autocast=accelerator.autocast, check_finite_every=1 if accelerator.device.type == "cpu"
                      else cfg.log_every, on_step_end=on_step_end, progress=lambda s: bar.update(1))
    finally:
        bar.close()
        logger.close()
    return final
