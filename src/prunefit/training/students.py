"""Students of the training recipes: speed-ups, a trainable twin, the distillation phase (an expert or dense
student is loaded by ``pruning.resolve.load_student`` and saved by ``pruning.expert.save_student``).

Shared by ``finetune``, ``bilevel`` and ``erase`` (they all train or edit a student against the unpruned
teacher), so it sits in ``training/`` rather than inside one recipe.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from diffusers import DDPMScheduler

from prunefit.models.components import Components
from prunefit.models.features import drop_feature_hooks, keep_feature_hooks
from prunefit.objectives.denoising import DenoisingObjective
from prunefit.objectives.inputs import InputBuilder
from prunefit.objectives.streams import Stream
from prunefit.training.loop import Phase, adamw_phase, lr_schedule


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
                    stream: int = Stream.LOWER, cache=None, device="cpu", wrap: Optional[Callable] = None,
                    every: int = 1, lr: Optional[float] = None,
                    warmup: Optional[int] = None) -> tuple[Phase, DenoisingObjective]:
    """The lower level / fine-tuning phase: DDPM + output KD + feature KD against ``teacher`` at ``cfg.train.lr``
    (``cfg`` is any config with ``loss`` and ``train`` sections: finetune or bilevel). ``wrap`` turns the denoising
    objective into the phase's objective (bilevel's G_lambda); ``every``, ``lr`` and ``warmup`` (steps) replace
    the train section's cadence, lr and warm-up (of train.lr_scheduler's schedule). Returns the phase and the plain
    denoising objective."""
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
    phase = adamw_phase(name, wrap(objective) if wrap is not None else objective, params, lr=lr or t.lr,
                        model=student, every=every,
                        lr_factor=lr_schedule(t.lr_scheduler, t.warmup_steps if warmup is None else warmup,
                                              max(1, t.max_steps // every), lr or t.lr),
                        micro_batch=t.micro_batch_size, accum=t.grad_accum_steps, max_grad_norm=t.max_grad_norm,
                        betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps, weight_decay=t.weight_decay)
    return phase, objective
