"""The phases each bilevel preset trains, built once from a ``BilevelConfig`` (the recipe only runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from prunefit.objectives.denoising import DenoisingObjective
from prunefit.objectives.streams import Stream
from prunefit.removal.bilevel.config import BilevelConfig
from prunefit.removal.bilevel.dual import DualController, DualSettings
from prunefit.removal.bilevel.objective import PenalizedObjective
from prunefit.removal.context import RemovalContext
from prunefit.removal.registry import get_method
from prunefit.training.loop import Phase, constant_with_warmup
from prunefit.training.students import copy_student, denoising_phase

"""RNG stream of the nested reading's theta-step lower batches (vartheta and the other phases use stream 0)."""


@dataclass
class BilevelPhases:
    phases: list[Phase]
    lower: DenoisingObjective
    """L_ft of theta (for the held-out validator)."""
    twin: Optional[torch.nn.Module] = None
    twin_lower: Optional[DenoisingObjective] = None
    """L_ft of vartheta, when the twin is trained."""
    controller: Optional[DualController] = None
    """constrained: the dual controller of the upper learning rate."""


def build_phases(cfg: BilevelConfig, student, comps, data, cache, device, rank: int = 0,
                 world: int = 1) -> BilevelPhases:
    """official, appc: [lower, upper every k]; constrained: [lower, vartheta, upper every k]; paper/interleaved:
    [G_lambda every step]; paper/nested: [vartheta every step, theta every k]; plus the vartheta twin where it is
    tracked and not already a phase. Every phase is built whole from ``cfg.resolved`` (nothing is patched after it is
    built; the constrained preset's controller is bound to the upper optimizer that stores its state)."""
    res = cfg.resolved

    def lower_phase(name: str, model, stream: Stream, **kw) -> tuple[Phase, DenoisingObjective]:
        """A denoising (L_ft) phase named ``name`` training ``model`` against the teacher; returns the phase and its
        objective."""
        return denoising_phase(name, student=model, teacher=comps.unet, comps=comps, data=data, cfg=cfg,
                               seed=cfg.seed, stream=stream, cache=cache, device=device, **kw)

    ctx = RemovalContext(student, comps.unet, comps, cfg.seed, device)  # upper targets: the unpruned teacher
    twin = twin_phase = twin_obj = None
    if res.tracks_vartheta:
        twin = copy_student(student, cfg.train)
        twin_phase, twin_obj = lower_phase("vartheta", twin, Stream.LOWER)  # the lower phase's batches, step by step
    warmup = constant_with_warmup(cfg.upper_warmup_steps)
    controller = None
    if cfg.preset == "constrained":
        lower, lower_obj = lower_phase("lower", student, Stream.LOWER)
        controller = DualController(DualSettings(cfg.dual_delta, cfg.dual_rho, cfg.dual_smoothing, res.r),
                                    lower, twin_phase, warmup)
    upper = get_method(cfg.upper_method).build_phase(ctx, res.upper, name="upper", every=res.every,
                                                     lr=res.upper_lr or cfg.train.lr, student=student,
                                                     freeze_others=False, lr_factor=controller or warmup)
    if controller is not None:
        controller.bind(upper.optimizer)
        # lower, then vartheta on the same batch, then upper: the gap of step t sets the upper step of step t
        return BilevelPhases([lower, twin_phase, upper], lower_obj, twin, twin_obj, controller)

    def penalized(f_every: int):
        """G_lambda around the lower objective: f's gradient every ``f_every`` calls (see PenalizedObjective)."""
        return lambda low: PenalizedObjective(low, upper.objective, student, upper.params, cfg.lam, f_every,
                                              res.upper.batch_size, rank, world)

    if cfg.spec.optimizers == 2:
        lower, lower_obj = lower_phase("lower", student, Stream.LOWER)
        phases = [lower, upper]
    elif not res.nested:
        lower, lower_obj = lower_phase("bilevel", student, Stream.LOWER, wrap=penalized(res.every))
        phases = [lower]
    else:
        theta, lower_obj = lower_phase("theta", student, Stream.THETA_LOWER, wrap=penalized(1), every=res.every,
                                       lr=res.upper_lr, warmup=cfg.upper_warmup_steps)
        phases = [theta]
    if twin_phase is not None:
        phases.insert(0, twin_phase) if res.nested else phases.append(twin_phase)
    return BilevelPhases(phases, lower_obj, twin, twin_obj)
