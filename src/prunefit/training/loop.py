"""The one training loop: phases (objective + optimizer + schedule) run every k global steps.

``train(phases, runtime, max_steps)`` is shared by fine-tuning (one phase), bilevel suppression
(lower phase + upper phase every k steps) and trainable removal methods. Each phase owns its gradient
accumulation (accelerate keeps one accumulation counter per Accelerator, which interleaved phases
would share), its optimizer and its LR function of the phase step (stateless, so exactly resumable).
Samples are indexed: phase step s, micro-batch m, process r read samples
((s * accum + m) * world + r) * micro_batch onwards.

An objective is called as ``objective(start, n)``; one that declares ``uses_step = True`` is called as
``objective(start, n, step=s)`` with its phase step s (no back-pointers from objectives to phases).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from prunefit.errors import PrunefitError
from prunefit.objectives.base import LossOutput, gradients_only_to
from prunefit.utils.faults import fault_pause


class NonFiniteLossError(PrunefitError):
    """A loss became NaN or infinite."""


@dataclass(kw_only=True)
class Phase:
    name: str
    objective: Callable[[int, int], LossOutput]
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    lr: float
    lr_factor: Callable[[int], float] = lambda step: 1.0
    every: int = 1
    micro_batch: int = 1
    accum: int = 1
    max_grad_norm: Optional[float] = None
    model: Optional[torch.nn.Module] = None
    """The (possibly DDP-wrapped) module, for no_sync during accumulation."""
    scaler: Optional[torch.amp.GradScaler] = None
    """fp16: this phase's own loss scaler (scaled backward, unscale before clipping, overflow steps skipped)."""
    step: int = 0
    last: dict[str, torch.Tensor] = field(default_factory=dict)

    def runs_at(self, global_step: int) -> bool:
        """Whether this phase steps at ``global_step`` (every ``every`` steps)."""
        return (global_step + 1) % self.every == 0

    def sample_start(self, micro: int, rank: int, world: int) -> int:
        """Index of the first sample of micro-batch ``micro`` of this phase's current step on ``rank`` of ``world`` (so
        every rank and step draws disjoint samples)."""
        return ((self.step * self.accum + micro) * world + rank) * self.micro_batch


def _check_finite(phase: Phase, out: LossOutput, global_step: int) -> None:
    if not torch.isfinite(out.total):
        bad = [k for k, v in out.parts.items() if not torch.isfinite(v)] or ["total"]
        value = float(out.parts.get(bad[0], out.total).detach())
        raise NonFiniteLossError(f"non-finite {phase.name} loss at step {global_step + 1} (term {bad[0]} = {value}); "
                                 "lower the learning rate, enable gradient clipping or check the data; the last "
                                 "checkpoint is intact")


def _clear_grads(phase: Phase) -> None:
    """Drop every gradient of the phase's model: phases that train different parameter subsets of one
    model must not leave gradients behind for each other."""
    phase.optimizer.zero_grad(set_to_none=True)
    if phase.model is not None:
        for p in phase.model.parameters():
            p.grad = None


def _is_ddp(model) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average ``params``' gradients over all processes in one flat all-reduce (data parallelism for phases
    whose model is not DDP-wrapped: bilevel phases sharing one student, the pruning router). A parameter
    that got no gradient on any process keeps ``grad=None``, exactly as in a one-process run."""
    import torch.distributed as dist

    if not params:
        return
    local = [p.grad is not None for p in params]
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    dtype, device = grads[0].dtype, grads[0].device
    # presence marks (a fill kernel, not a host-to-device copy, in the common all-present case)
    marks = (torch.ones(len(params), dtype=dtype, device=device) if all(local)
             else torch.tensor(local, dtype=dtype, device=device))
    flat = torch.cat(grads + [marks])
    dist.all_reduce(flat)  # one collective on every rank; the presence counts ride at the end
    # every gradient present here means present everywhere: no device-to-host read (the common case)
    seen = [True] * len(params) if all(local) else (flat[-len(params):] > 0).tolist()
    flat = flat[: -len(params)] / world
    offset = 0
    for p, s in zip(params, seen):
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone() if s else None
        offset += n


def _distributed(world: int) -> bool:
    return world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def _call_objective(phase: Phase, start: int) -> LossOutput:
    if getattr(phase.objective, "uses_step", False):
        return phase.objective(start, phase.micro_batch, step=phase.step)
    return phase.objective(start, phase.micro_batch)


def own_gradients(phase: Phase):
    """Inside the block only the phase's own parameters of its model record gradients (an upper phase training
    a subset of a shared student does not compute, then drop, gradients for the rest); a no-op when the phase
    trains every trainable parameter of its model (a DDP-wrapped model always does)."""
    model = getattr(phase.model, "module", phase.model)
    if model is None:
        return nullcontext()
    own = {id(p) for p in phase.params}
    if all(id(p) in own for p in model.parameters() if p.requires_grad):
        return nullcontext()
    return gradients_only_to(model, phase.params)


def run_phase(phase: Phase, global_step: int, backward: Callable, rank: int = 0, world: int = 1,
              autocast=nullcontext, check_finite: bool = True) -> None:
    """One optimizer step of ``phase`` (``accum`` micro-batches). Written by hand rather than with accelerate's
    ``accumulate`` / ``clip_grad_norm_`` / prepared optimizers: those keep one accumulation counter and one fp16
    GradScaler per Accelerator, while interleaved phases need their own (each phase's scaler is unscaled here before
    ``torch.nn.utils.clip_grad_norm_`` clips that phase's parameters only, and skips that optimizer's overflow
    steps)."""
    _clear_grads(phase)
    for g in phase.optimizer.param_groups:
        g["lr"] = phase.lr * phase.lr_factor(phase.step)
    sums: dict[str, torch.Tensor] = {}
    with own_gradients(phase):  # forward and backward: gradient checkpointing recomputes under the same flags
        for m in range(phase.accum):
            sync = nullcontext()
            if world > 1 and phase.model is not None and m < phase.accum - 1 and hasattr(phase.model, "no_sync"):
                sync = phase.model.no_sync()
            with sync, autocast():
                out = _call_objective(phase, phase.sample_start(m, rank, world))
                if check_finite:
                    _check_finite(phase, out, global_step)
                loss = out.total / phase.accum
                backward(phase.scaler.scale(loss) if phase.scaler is not None else loss)
            for k, v in {"total": out.total, **out.parts}.items():
                sums[k] = sums.get(k, 0) + v.detach() / phase.accum
    if _distributed(world) and not _is_ddp(phase.model):
        average_gradients(phase.params, world)
    if phase.scaler is not None:
        phase.scaler.unscale_(phase.optimizer)  # clipping and the step see the true gradients
    if phase.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(phase.params, phase.max_grad_norm)
    fault_pause("STEP", global_step)  # kill tests: gradients computed, weights not yet updated
    if phase.scaler is not None:
        phase.scaler.step(phase.optimizer)  # skipped (weights unchanged) when a gradient overflowed
        phase.scaler.update()
    else:
        phase.optimizer.step()
    _clear_grads(phase)
    phase.step += 1
    phase.last = sums


def train(phases: list[Phase], max_steps: int, start_step: int = 0, backward: Callable = lambda loss: loss.backward(),
          rank: int = 0, world: int = 1, autocast=nullcontext, check_finite_every: int = 1,
          on_step_end: Optional[Callable[[int, list[Phase]], None]] = None,
          progress: Optional[Callable[[int], None]] = None) -> int:
    """Run global steps start_step .. max_steps - 1; returns the final global step."""
    step = start_step
    for step in range(start_step, max_steps):
        for ph in phases:
            if ph.runs_at(step):
                run_phase(ph, step, backward, rank, world, autocast,
                          check_finite=check_finite_every > 0 and (step + 1) % check_finite_every == 0)
        if progress:
            progress(step + 1)
        if on_step_end:
            on_step_end(step + 1, phases)
    return max(step + 1, start_step) if max_steps > start_step else start_step


def adamw_phase(name: str, objective: Callable, params: list[torch.nn.Parameter], *, lr: float,
                model: Optional[torch.nn.Module] = None, every: int = 1,
                lr_factor: Callable[[int], float] = lambda step: 1.0, micro_batch: int = 1, accum: int = 1,
                max_grad_norm: Optional[float] = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.0) -> Phase:
    """The one Phase + optimizer builder: an AdamW over ``params`` (fused where they live on CUDA: one kernel for
    the whole update) inside a Phase with its final objective, schedule and cadence (phases are not patched after
    they are built)."""
    fused = bool(params) and params[0].device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)
    return Phase(name=name, objective=objective, optimizer=opt, params=params, lr=lr, lr_factor=lr_factor,
                 every=every, micro_batch=micro_batch, accum=accum, max_grad_norm=max_grad_norm, model=model)


def constant_with_warmup(warmup: int) -> Callable[[int], float]:
    """The paper's schedule: linear warm-up over ``warmup`` optimizer steps, then constant."""
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def lr_schedule(name: str, warmup: int, total: int, lr: float = 1.0) -> Callable[[int], float]:
    """diffusers' ``get_scheduler(name)`` LR factor as a pure function of the phase step (exact resume needs no
    scheduler state). A LambdaLR is a stateful counter around a pure ``lr_lambda``; we keep the lambda only (built
    once on a throw-away optimizer at ``lr``: polynomial's factor depends on it). Phase step s trains at the LR
    diffusers' scheduler holds after s + 1 ``scheduler.step()`` calls, ``lr_lambda(s + 1)``: warm-up counts the
    step being taken, so no step trains at LR 0 and ``constant_with_warmup`` is exactly ``constant_with_warmup``
    above (the paper's); ``total`` is the phase's number of optimizer steps."""
    from diffusers.optimization import get_scheduler

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    factor = get_scheduler(name, dummy, num_warmup_steps=warmup, num_training_steps=total).lr_lambdas[0]
    return lambda step: factor(step + 1)
