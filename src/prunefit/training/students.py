"""Students of the training recipes: load / save an expert or dense UNet, speed-ups, the distillation phase.

Shared by ``finetune``, ``bilevel`` and ``erase`` (they all train or edit a student against the unpruned
teacher), so it sits in ``training/`` rather than inside one recipe.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch
from diffusers import DDPMScheduler

from prunefit.models.components import Components
from prunefit.models.features import drop_feature_hooks, keep_feature_hooks
from prunefit.objectives.denoising import DenoisingObjective
from prunefit.objectives.inputs import InputBuilder
from prunefit.objectives.streams import Stream
from prunefit.training.loop import Phase, constant_with_warmup


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
        compile_forward(student)
        compile_forward(teacher)


def compile_forward(unet) -> None:
    """torch.compile ``unet.forward``, with the feature-distillation hooks registered for good first (a compiled
    forward does not notice hooks added or removed around it; see ``keep_feature_hooks``)."""
    keep_feature_hooks(unet)
    unet.forward = torch.compile(unet.forward)


def copy_student(student, t):
    """A trainable deep copy of ``student`` (bilevel's vartheta twin) with its own compiled forward and feature
    hooks: a plain deep copy would share the original's (its forward would run the original's weights)."""
    twin = copy.deepcopy(student)
    if "forward" in twin.__dict__:
        del twin.forward
    drop_feature_hooks(twin)
    if t.compile:
        compile_forward(twin)
    return twin.requires_grad_(True)


def denoising_phase(name: str, *, student, teacher, comps: Components, data, cfg, seed: int,
                    stream: int = Stream.LOWER, cache=None, device="cpu") -> tuple[Phase, DenoisingObjective]:
    """The lower level / fine-tuning phase: DDPM + output KD + feature KD against ``teacher`` at ``cfg.train.lr``
    (``cfg`` is any config with ``loss`` and ``train`` sections: finetune or bilevel)."""
    sched = DDPMScheduler.from_config(comps.scheduler.config)
    builder = InputBuilder(components=comps, data=data, seed=seed, num_train_timesteps=sched.config.num_train_timesteps,
                           stream=stream, cache=cache, device=device, num_workers=cfg.data.num_workers,
                           pin_memory=cfg.data.pin_memory)
    objective = DenoisingObjective(student=student, teacher=teacher, inputs=builder,
                                   alphas_cumprod=sched.alphas_cumprod, prediction_type=comps.prediction_type,
                                   w_ddpm=cfg.loss.ddpm, w_output=cfg.loss.output_kd, w_feature=cfg.loss.feature_kd,
                                   min_snr_gamma=cfg.loss.min_snr_gamma, min_snr_formula=cfg.loss.min_snr_formula)
    t = cfg.train
    params = [p for p in student.parameters() if p.requires_grad]
    fused = torch.device(device).type == "cuda"  # one kernel for the whole AdamW update where available
    opt = torch.optim.AdamW(params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                            weight_decay=t.weight_decay, fused=fused or None)
    phase = Phase(name=name, objective=objective, optimizer=opt, params=params, lr=t.lr,
                  lr_factor=constant_with_warmup(t.warmup_steps), micro_batch=t.micro_batch_size,
                  accum=t.grad_accum_steps, max_grad_norm=t.max_grad_norm, model=student)
    return phase, objective
