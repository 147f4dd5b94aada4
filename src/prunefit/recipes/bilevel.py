"""``prunefit bilevel``: distil an expert (lower level) while an upper phase suppresses concepts."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from prunefit.config.load import save_resolved_config
from prunefit.data.cache import load_cache
from prunefit.data.datasets import build_data
from prunefit.errors import ConfigError, OutputError
from prunefit.models.components import load_components
from prunefit.objectives.base import LossOutput
from prunefit.objectives.inputs import InputBuilder
from prunefit.recipes.finetune import apply_speedups, denoising_phase, load_student, save_student
from prunefit.removal.bilevel import PRESETS, BilevelConfig
from prunefit.removal.context import RemovalContext
from prunefit.removal.registry import get_method
from prunefit.training.loop import Phase, constant_with_warmup
from prunefit.training.runtime import fit, make_accelerator, report_effective_batch, resolve_resume


@dataclass
class BilevelResult:
    output_dir: Path
    model_path: Path
    steps: int


@dataclass
class PenalizedObjective:
    """The paper preset: lam * L_ft(lower batch) every step, + f(upper batch) every ``every``-th step."""

    lower: object
    upper: object
    lam: float
    every: int
    upper_batch: int
    phase: Phase = None  # set after the phase is built
    rank: int = 0
    world: int = 1

    def __call__(self, start: int, n: int) -> LossOutput:
        low = self.lower(start, n)
        total = self.lam * low.total
        parts = {f"lower/{k}": v for k, v in low.parts.items()}
        parts["lower"] = low.total
        step = self.phase.step
        if (step + 1) % self.every == 0:
            up = self.upper(((step // self.every) * self.world + self.rank) * self.upper_batch, self.upper_batch)
            total = total + up.total
            parts["upper"] = up.total
        return LossOutput(total, parts)


def main(cfg: BilevelConfig) -> BilevelResult:
    out = Path(cfg.output_dir)
    if cfg.resume is None and (out / "bilevel_summary.json").is_file():
        raise OutputError(f"{out} already holds a finished bilevel run; use a new output_dir")
    if cfg.train.teacher_dtype != "float32":
        raise ConfigError("train.teacher_dtype must stay float32 for bilevel runs: the upper objective's "
                          "targets come from the same teacher")
    entry = get_method(cfg.upper_method)
    mcfg = cfg.upper_config()
    out.mkdir(parents=True, exist_ok=True)
    resume = resolve_resume(out, cfg.resume)
    torch.manual_seed(cfg.seed)
    comps = load_components(cfg.model, device=cfg.device)
    student, expert = load_student(cfg.student, comps)
    student.to(cfg.device).train().requires_grad_(True)
    apply_speedups(student, comps.unet, cfg.train)
    accelerator = make_accelerator(cfg.train, cfg.device)
    cache = load_cache(cfg.cache_dir, comps.source) if cfg.cache_dir else None
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    lower, lower_obj = denoising_phase("lower", student, comps.unet, comps, data, cfg, cfg.seed, 0, cache,
                                       accelerator.device)
    ctx = RemovalContext(student, comps.unet, comps, cfg.seed, accelerator.device)  # upper targets: the teacher
    upper = entry.build_phase(ctx, mcfg, name="upper", every=cfg.every, lr=cfg.upper_lr, student=student,
                              freeze_others=False)
    upper.lr_factor = constant_with_warmup(cfg.upper_warmup_steps)
    if PRESETS[cfg.preset]["optimizers"] == 2:
        phases = [lower, upper]
    else:
        pen = PenalizedObjective(lower.objective, upper.objective, cfg.lam, cfg.every, cfg.upper_batch_size,
                                 rank=accelerator.process_index, world=accelerator.num_processes)
        single = Phase("bilevel", pen, lower.optimizer, lower.params, cfg.upper_lr,
                       constant_with_warmup(cfg.train.warmup_steps), 1, cfg.train.micro_batch_size,
                       cfg.train.grad_accum_steps, cfg.train.max_grad_norm, student)
        pen.phase = single
        phases = [single]
    vartheta = _vartheta_phase(cfg, comps, data, cache, accelerator.device, student) if cfg.track_vartheta else None
    if vartheta is not None:
        phases.append(vartheta[0])
    report_effective_batch(accelerator, cfg.train.micro_batch_size, cfg.train.grad_accum_steps)
    if accelerator.is_main_process:
        save_resolved_config(cfg, out)
    validate = _gap_validator(cfg, lower_obj, vartheta, comps, data) if cfg.train.val_every else None
    steps = fit(phases, student, cfg.train, out, accelerator, resume, validate)
    path = out
    if accelerator.is_main_process:
        path = save_student(student.eval().requires_grad_(False), expert, comps, out,
                            {"bilevel": cfg.preset, "suppressed": mcfg.concepts, "steps": steps})
        (out / "bilevel_summary.json").write_text(json.dumps(
            {"preset": cfg.preset, "upper_method": cfg.upper_method, "concepts": mcfg.concepts, "steps": steps,
             "upper_every": cfg.every, "upper_steps": steps // cfg.every, "output": str(path)}, indent=1))
    return BilevelResult(out, path, steps)


def _vartheta_phase(cfg: BilevelConfig, comps, data, cache, device, student):
    """vartheta: a copy of the student trained on L_ft alone (for the constraint-gap report only)."""
    twin = copy.deepcopy(student).requires_grad_(True)
    phase, objective = denoising_phase("vartheta", twin, comps.unet, comps, data, cfg, cfg.seed, 0, cache, device)
    return phase, objective, twin


def _gap_validator(cfg: BilevelConfig, lower_obj, vartheta, comps, data):
    held_out = InputBuilder(comps, data, cfg.seed + 1, lower_obj.inputs.num_train_timesteps, 99, None,
                            lower_obj.inputs.device)

    def validate(step: int) -> dict:
        with torch.no_grad():
            batch = held_out(10**9, cfg.train.val_samples)
            theta = lower_obj.loss(batch).total.item()
            out = {"val/L_ft_theta": theta}
            if vartheta is not None:
                _, v_obj, _ = vartheta
                out["val/L_ft_vartheta"] = v_obj.loss(batch).total.item()
                out["val/constraint_gap"] = theta - out["val/L_ft_vartheta"]
        return out

    return validate
