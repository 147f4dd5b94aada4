"""``prunefit finetune``: distil an expert from the unpruned teacher (DDPM + output KD + feature KD)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import FinetuneConfig
from prunefit.data.cache import load_cache
from prunefit.data.datasets import build_data
from prunefit.errors import OutputError
from prunefit.models.card import write_card
from prunefit.models.components import Components, load_components
from prunefit.objectives.denoising import DenoisingObjective
from prunefit.objectives.streams import Stream
from prunefit.pruning.expert import save_student
from prunefit.pruning.resolve import check_inputs, load_student
from prunefit.training.memory import check_training_memory
from prunefit.training.runtime import (
    EMA,
    fit,
    make_accelerator,
    prepare_model,
    report_effective_batch,
    resolve_resume,
    run_device,
    run_settings,
)
from prunefit.training.students import apply_speedups, denoising_phase
from prunefit.utils.io import mark_done
from prunefit.utils.lock import output_lock


@dataclass
class FinetuneResult:
    output_dir: Path
    model_path: Path
    steps: int
    effective_batch: int

    def lines(self) -> list[str]:
        """What the run did, for the console: steps, effective batch, model path."""
        return [f"fine-tuned {self.steps} steps (effective batch {self.effective_batch}) -> {self.model_path}"]


def main(cfg: FinetuneConfig) -> FinetuneResult:
    """``prunefit finetune``: fine-tune (distil) the student under an output lock; returns the model path and steps."""
    out = Path(cfg.output_dir)
    if cfg.resume is None and ((out / "expert" / "expert.json").is_file() or (out / "pipeline").is_dir()):
        raise OutputError(f"{out} already holds a finished fine-tuning run; use a new output_dir")
    check_inputs(model=cfg.model, student=cfg.student, cache_dir=cfg.cache_dir)
    with output_lock(out):
        return _finetune(cfg, out)


def _finetune(cfg: FinetuneConfig, out: Path) -> FinetuneResult:
    resume = resolve_resume(out, cfg.resume)
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg.train, cfg.device)  # first: a launch it refuses fails before any loading
    device = str(run_device(accelerator))  # one device for every component: the one accelerate moves the student to
    comps = load_components(cfg.model, device=device)
    teacher = comps.unet
    student, info = load_student(cfg.student, comps)
    student.to(device).train().requires_grad_(True)
    check_training_memory("finetune", student, comps, cfg.train, cfg.data.resolution or comps.native_resolution,
                          device)
    apply_speedups(student, teacher, cfg.train)
    cache = load_cache(cfg.cache_dir, comps.source) if cfg.cache_dir else None
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    phase, objective = denoising_phase("lower", student=student, teacher=teacher, comps=comps, data=data, cfg=cfg,
                                       seed=cfg.seed, stream=Stream.LOWER, cache=cache, device=device)
    objective.student = prepare_model(accelerator, phase, student)  # the optimizer stays ours (fp16: our scaler)
    effective = report_effective_batch(accelerator, cfg.train.micro_batch_size, cfg.train.grad_accum_steps)
    if accelerator.is_main_process:
        save_resolved_config(cfg, out)
    ema = EMA(cfg.train.ema_decay) if cfg.train.ema_decay else None
    validate = _validator(objective, cfg) if cfg.train.val_every else None
    sampler = _sampler(student, comps, cfg, out) if cfg.train.sample_every and cfg.train.sample_prompts else None
    steps = fit([phase], student, cfg.train, out, accelerator, resume, validate, sampler, ema, run_config=cfg)
    if ema is not None:
        ema.copy_to(student)
    path = out
    if accelerator.is_main_process:
        path = save_student(student.eval(), info, comps, out,
                            {"finetuned_steps": steps, "finetune_model": comps.source})
        mark_done(out / "finetune_summary.json",
                  {"steps": steps, "effective_batch": effective, "student": cfg.student, "output": str(path),
                   "data_skipped_images": getattr(data, "skipped", 0),
                   "runtime": run_settings(accelerator, cfg.train)}, indent=1)
        write_card(out)
    return FinetuneResult(out, path, steps, effective)


def _validator(objective: DenoisingObjective, cfg: FinetuneConfig):
    """Loss on fixed held-out samples (indices far from any training sample), without gradients."""
    from prunefit.objectives.inputs import held_out_batch

    def validate(step: int) -> dict:
        """Held-out loss parts of the objective at ``step``, keyed 'val/<part>'."""
        with torch.no_grad():
            out = objective.loss(held_out_batch(objective.inputs, cfg.seed, cfg.train.val_samples))
        return {f"val/{k}": v for k, v in out.detached().items()}

    return validate


def _sampler(student, comps: Components, cfg: FinetuneConfig, out: Path):
    from prunefit.config.schema import SamplerConfig
    from prunefit.data.prompts import inline_prompts
    from prunefit.generation.grid import image_grid
    from prunefit.generation.sample import sample_images

    records = inline_prompts(cfg.train.sample_prompts)

    def sample(step: int):
        """Save a grid of the student's samples of the fixed prompts at ``step`` into samples/; returns it (fit
        logs it to the trackers that take images)."""
        was_training = student.training
        student.eval()
        imgs = sample_images(comps.with_unet(student), records, SamplerConfig(batch_size=len(records)),
                             [cfg.seed + i for i in range(len(records))])
        (out / "samples").mkdir(exist_ok=True)
        grid = image_grid(imgs)
        grid.save(out / "samples" / f"step-{step:08d}.png")
        student.train(was_training)
        return grid

    return sample
