"""``prunefit bilevel``: distil an expert (lower level) while an upper phase suppresses concepts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prunefit.config.load import save_resolved_config
from prunefit.data.cache import load_cache
from prunefit.data.datasets import build_data
from prunefit.errors import ConfigError, OutputError
from prunefit.models.card import write_card
from prunefit.models.components import load_components
from prunefit.objectives.inputs import held_out_batch
from prunefit.pruning.expert import save_student
from prunefit.pruning.resolve import load_student
from prunefit.removal.bilevel.config import BilevelConfig
from prunefit.removal.bilevel.phases import BilevelPhases, build_phases
from prunefit.removal.registry import get_method
from prunefit.training.memory import check_training_memory
from prunefit.training.runtime import (
    EMA,
    fit,
    make_accelerator,
    report_effective_batch,
    resolve_resume,
    run_device,
    run_settings,
)
from prunefit.training.students import apply_speedups
from prunefit.utils.io import mark_done


@dataclass
class BilevelResult:
    output_dir: Path
    model_path: Path
    steps: int
    balance: dict

    def lines(self) -> list[str]:
        """What the run did, for the console: preset, steps, model path."""
        return [f"bilevel ({self.balance.get('preset')}) {self.steps} steps -> {self.model_path}"]


def main(cfg: BilevelConfig) -> BilevelResult:
    """Check the inputs, then run under the output folder's lock."""
    from prunefit.pruning.resolve import check_inputs
    from prunefit.utils.lock import output_lock

    check_inputs(model=cfg.model, student=cfg.student, cache_dir=cfg.cache_dir)
    get_method(cfg.upper_method).check(cfg.resolved.upper)
    with output_lock(cfg.output_dir):
        return _main(cfg)


def _main(cfg: BilevelConfig) -> BilevelResult:
    out = Path(cfg.output_dir)
    if cfg.resume is None and (out / "bilevel_summary.json").is_file():
        raise OutputError(f"{out} already holds a finished bilevel run; use a new output_dir")
    if cfg.train.teacher_dtype != "float32":
        raise ConfigError("train.teacher_dtype must stay float32 for bilevel runs: the upper objective's "
                          "targets come from the same teacher")
    mcfg = cfg.resolved.upper
    out.mkdir(parents=True, exist_ok=True)
    resume = resolve_resume(out, cfg.resume)
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg.train, cfg.device)  # first: a launch it refuses fails before any loading
    device = str(run_device(accelerator))  # one device for every component
    comps = load_components(cfg.model, device=device)
    student, expert = load_student(cfg.student, comps)
    check_training_memory("bilevel", student, comps, cfg.train, cfg.data.resolution or comps.native_resolution,
                          device, optimizers=cfg.spec.optimizers, vartheta=cfg.tracks_vartheta,
                          extra_optimizer_params=_upper_params(cfg, student, comps), teacher_dtype_fixed=True)
    student.to(device).train().requires_grad_(True)
    apply_speedups(student, comps.unet, cfg.train)
    cache = load_cache(cfg.cache_dir, comps.source) if cfg.cache_dir else None
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    built = build_phases(cfg, student, comps, data, cache, device, accelerator.process_index,
                         accelerator.num_processes)
    report_effective_batch(accelerator, cfg.train.micro_batch_size, cfg.train.grad_accum_steps)
    balance = cfg.balance()
    if accelerator.is_main_process:
        save_resolved_config(cfg, out)
        print(f"bilevel balance: {_balance_line(balance)}")
    validate = _gap_validator(cfg, built) if cfg.train.val_every else None
    ema = EMA(cfg.train.ema_decay) if cfg.train.ema_decay else None  # theta's average: the weights saved
    steps = fit(built.phases, student, cfg.train, out, accelerator, resume, validate, ema=ema, run_config=cfg)
    if ema is not None:
        ema.copy_to(student)
    path = out
    if accelerator.is_main_process:
        path = save_student(student.eval().requires_grad_(False), expert, comps, out,
                            {"bilevel": cfg.preset, "suppressed": mcfg.concepts, "steps": steps, "balance": balance})
        mark_done(out / "bilevel_summary.json", {
            "preset": cfg.preset, "upper_method": cfg.upper_method, "concepts": mcfg.concepts, "steps": steps,
            "upper_every": cfg.every, "upper_steps": steps // cfg.every, "upper_train_method": mcfg.train_method,
            "upper_xt_source": mcfg.xt_source, "upper_condition": mcfg.condition, "balance": balance,
            "ema_decay": cfg.train.ema_decay,
            **({"dual": built.controller.summary()} if built.controller is not None else {}),
            "output": str(path), "runtime": run_settings(accelerator, cfg.train)}, indent=1)
        write_card(out)
    return BilevelResult(out, path, steps, balance)


def _balance_line(b: dict) -> str:
    r = "n/a (one optimizer: lambda sets the balance)" if b["r"] is None else f"{b['r']:.3g}"
    return (f"r = {r}, lower lr {b['lower_lr']:g}, upper lr {b['upper_lr'] if b['upper_lr'] is not None else 'n/a'}, "
            f"upper every {b['upper_every']}, lambda {b['lam'] if b['lam'] is not None else 'n/a'}, "
            f"batches {b['lower_batch']} / {b['upper_batch']}")


def _gap_validator(cfg: BilevelConfig, built: BilevelPhases):
    """L_ft of theta (and of vartheta, with the constraint gap) on fixed held-out samples."""
    def validate(step: int) -> dict:
        """Held-out L_ft of theta (and of vartheta, with the constraint gap) at ``step``."""
        with torch.no_grad():
            batch = held_out_batch(built.lower.inputs, cfg.seed, cfg.train.val_samples)
            theta = built.lower.loss(batch).total.item()
            out = {"val/L_ft_theta": theta}
            if built.twin_lower is not None:
                out["val/L_ft_vartheta"] = built.twin_lower.loss(batch).total.item()
                out["val/constraint_gap"] = theta - out["val/L_ft_vartheta"]
        return out

    return validate


def _upper_params(cfg: BilevelConfig, student: torch.nn.Module, comps) -> int:
    """Parameters of the upper method's own optimizer (the official preset's second AdamW): its UNet parameter
    subset, or the whole text encoder for a method that trains that."""
    from prunefit.removal.context import param_subset

    mcfg = cfg.resolved.upper
    if get_method(cfg.upper_method).trained_module(mcfg) == "text_encoder":
        return sum(p.numel() for p in comps.text_encoder.parameters())
    return sum(p.numel() for _, p in param_subset(student, mcfg.train_method))
