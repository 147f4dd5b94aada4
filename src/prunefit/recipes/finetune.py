"""``prunefit finetune``: distil an expert from the unpruned teacher (DDPM + output KD + feature KD)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from diffusers import DDPMScheduler

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import FinetuneConfig
from prunefit.data.cache import load_cache
from prunefit.data.datasets import build_data
from prunefit.errors import OutputError
from prunefit.models.components import Components, load_components
from prunefit.objectives.denoising import DenoisingObjective
from prunefit.objectives.inputs import InputBuilder
from prunefit.training.loop import Phase, constant_with_warmup
from prunefit.training.runtime import EMA, fit, make_accelerator, report_effective_batch, resolve_resume


@dataclass
class FinetuneResult:
    output_dir: Path
    model_path: Path
    steps: int
    effective_batch: int


def load_student(cfg_student: Optional[str], comps: Components):
    """(trainable student UNet, expert info or None): an expert folder, or a copy of the teacher UNet."""
    if cfg_student:
        from prunefit.pruning.expert import load_expert

        unet, info = load_expert(cfg_student, comps.unet.config)
        return unet, info
    return copy.deepcopy(comps.unet), None


def save_student(unet, info, comps: Components, out: Path, extra: dict) -> Path:
    """An expert folder (pruned students) or a standard diffusers pipeline folder (dense students)."""
    if info is not None:
        from prunefit.pruning.expert import save_expert

        info = copy.deepcopy(info)
        info.extra = {**(info.extra or {}), **extra}
        return save_expert(unet, info, out / "expert")
    from prunefit.models.components import save_pipeline

    return save_pipeline(comps.with_unet(unet), out / "pipeline")


def apply_speedups(student, teacher, t) -> None:
    """Gradient checkpointing, channels_last, the teacher's dtype and torch.compile as the train config asks."""
    if t.teacher_dtype != "float32":
        teacher.to(getattr(torch, t.teacher_dtype))
    if t.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    if t.channels_last:
        student.to(memory_format=torch.channels_last)
        teacher.to(memory_format=torch.channels_last)
    if t.compile:
        student.forward = torch.compile(student.forward)
        teacher.forward = torch.compile(teacher.forward)


def denoising_phase(name: str, student, teacher, comps: Components, data, cfg, seed: int, stream: int,
                    cache=None, device="cpu") -> tuple[Phase, DenoisingObjective]:
    sched = DDPMScheduler.from_config(comps.scheduler.config)
    builder = InputBuilder(comps, data, seed, sched.config.num_train_timesteps, stream, cache, device)
    objective = DenoisingObjective(student, teacher, builder, sched.alphas_cumprod, comps.prediction_type,
                                   cfg.loss.ddpm, cfg.loss.output_kd, cfg.loss.feature_kd, cfg.loss.min_snr_gamma,
                                   cfg.loss.min_snr_formula)
    t = cfg.train
    params = [p for p in student.parameters() if p.requires_grad]
    fused = torch.device(device).type == "cuda"  # one kernel for the whole AdamW update where available
    opt = torch.optim.AdamW(params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                            weight_decay=t.weight_decay, fused=fused or None)
    phase = Phase(name, objective, opt, params, t.lr, constant_with_warmup(t.warmup_steps), 1, t.micro_batch_size,
                  t.grad_accum_steps, t.max_grad_norm, student)
    return phase, objective


def main(cfg: FinetuneConfig) -> FinetuneResult:
    out = Path(cfg.output_dir)
    if cfg.resume is None and ((out / "expert" / "expert.json").is_file() or (out / "pipeline").is_dir()):
        raise OutputError(f"{out} already holds a finished fine-tuning run; use a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    resume = resolve_resume(out, cfg.resume)
    torch.manual_seed(cfg.seed)
    comps = load_components(cfg.model, device=cfg.device)
    teacher = comps.unet
    student, info = load_student(cfg.student, comps)
    student.to(cfg.device).train().requires_grad_(True)
    apply_speedups(student, teacher, cfg.train)
    accelerator = make_accelerator(cfg.train, cfg.device)
    cache = load_cache(cfg.cache_dir, comps.source) if cfg.cache_dir else None
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    phase, objective = denoising_phase("lower", student, teacher, comps, data, cfg, cfg.seed, 0, cache,
                                       accelerator.device)
    phase.model, phase.optimizer = accelerator.prepare(student, phase.optimizer)
    objective.student = phase.model
    effective = report_effective_batch(accelerator, cfg.train.micro_batch_size, cfg.train.grad_accum_steps)
    if accelerator.is_main_process:
        save_resolved_config(cfg, out)
    ema = EMA(cfg.train.ema_decay) if cfg.train.ema_decay else None
    validate = _validator(objective, cfg, comps, data) if cfg.train.val_every else None
    sampler = _sampler(student, comps, cfg, out) if cfg.train.sample_every and cfg.train.sample_prompts else None
    steps = fit([phase], student, cfg.train, out, accelerator, resume, validate, sampler, ema)
    if ema is not None:
        ema.copy_to(student)
    path = out
    if accelerator.is_main_process:
        path = save_student(student.eval(), info, comps, out,
                            {"finetuned_steps": steps, "finetune_model": comps.source})
        (out / "finetune_summary.json").write_text(json.dumps(
            {"steps": steps, "effective_batch": effective, "student": cfg.student, "output": str(path),
             "data_skipped_images": getattr(data, "skipped", 0)}, indent=1))
    return FinetuneResult(out, path, steps, effective)


def _validator(objective: DenoisingObjective, cfg: FinetuneConfig, comps, data):
    """Loss on fixed held-out samples (indices far from any training sample), without gradients."""
    from prunefit.objectives.inputs import InputBuilder

    held_out = InputBuilder(comps, data, cfg.seed + 1, objective.inputs.num_train_timesteps, 99,
                            None, objective.inputs.device)

    def validate(step: int) -> dict:
        with torch.no_grad():
            out = objective.loss(held_out(10**9, cfg.train.val_samples))
        return {f"val/{k}": v for k, v in out.detached().items()}

    return validate


def _sampler(student, comps: Components, cfg: FinetuneConfig, out: Path):
    from prunefit.config.schema import SamplerConfig
    from prunefit.data.prompts import inline_prompts
    from prunefit.generation.grid import image_grid
    from prunefit.generation.sample import sample_images

    records = inline_prompts(cfg.train.sample_prompts)

    def sample(step: int) -> None:
        was_training = student.training
        student.eval()
        imgs = sample_images(comps.with_unet(student), records, SamplerConfig(batch_size=len(records)),
                             [cfg.seed + i for i in range(len(records))])
        (out / "samples").mkdir(exist_ok=True)
        image_grid(imgs).save(out / "samples" / f"step-{step:08d}.png")
        student.train(was_training)

    return sample
