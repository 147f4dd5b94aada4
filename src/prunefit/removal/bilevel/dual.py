"""The constrained preset's dual controller: hold the distillation constraint by dual ascent on the upper step size.

Eq. 15 of the paper asks to unlearn subject to L_ft(theta) - inf L_ft <= 0. The vartheta twin (trained on the same
lower batches with L_ft only) estimates inf L_ft, so the value-function gap

    g_t = L_ft(theta; b_t) - L_ft(vartheta; b_t)          (the same batch b_t for both)

measures how far unlearning has pushed theta off the distillation optimum. First-order bilevel methods penalise
this gap: F2SA (Kwon et al. 2023) adds lambda_t (g(x, y) - g(x, z)) with an increasing lambda_t, BOME (Liu et al.
2022) moves along -(grad f + lambda grad q) with a dynamic-barrier lambda that grows while the gap q does not
shrink. Under Adam a gradient weight is nearly inert (each coordinate moves by about its learning rate), so the
multiplier acts where Adam listens, on the upper learning rate:

    g_bar_t   = beta g_bar_{t-1} + (1 - beta) g_t                       (smoothed gap)
    delta_t   = delta_frac * L_bar_t(vartheta)                         (the allowed gap, a fraction of L_ft)
    mu_{t+1}  = max(0, mu_t + rho (g_bar_t - delta_t) / delta_t)       (dual ascent, normalised by delta)
    eta_U,t   = r_max * k * eta_L / (1 + mu_t)                          (effective r = r_max / (1 + mu_t))

so the upper step runs at the full balance r_max while the gap stays under delta and backs off while it does not;
delta_frac is the knob that traces a front. Updated once per upper step, from the lower and twin losses of that
same global step (the phases run lower, vartheta, upper). The state lives in the upper optimizer's first parameter
group, so checkpoints carry it and a resumed run continues the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


def smooth(previous: Optional[float], value: float, beta: float) -> float:
    """Exponential smoothing; the first value starts the average."""
    return value if previous is None else beta * previous + (1.0 - beta) * value


def dual_step(mu: float, gap: float, delta: float, rho: float) -> float:
    """mu_{t+1} = max(0, mu_t + rho (gap - delta) / delta)."""
    return max(0.0, mu + rho * (gap - delta) / delta)


def effective_r(r_max: float, mu: float) -> float:
    """The balance the upper step runs at: r_max / (1 + mu)."""
    return r_max / (1.0 + mu)


@dataclass(frozen=True)
class DualSettings:
    delta_frac: float
    rho: float
    beta: float
    r_max: float


STATE_KEYS = ("log_dual_mu", "log_dual_gap", "log_dual_delta", "log_dual_raw_gap", "log_r_eff", "dual_ref",
              "dual_step")
"""The controller's state in the upper optimizer's first parameter group; the training log records every key that
starts with ``log_`` (as ``upper/dual_mu``, ``upper/r_eff``, ...)."""


class DualController:
    """The upper phase's ``lr_factor``: ``warmup(step) / (1 + mu)``, with mu updated once per upper step from the
    lower and twin phases' losses of that global step. ``bind`` gives it the upper optimizer that stores its state."""

    def __init__(self, settings: DualSettings, lower, twin, warmup: Callable[[int], float]) -> None:
        self.settings, self.lower, self.twin, self.warmup = settings, lower, twin, warmup
        self.optimizer: Optional[torch.optim.Optimizer] = None

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep the state in ``optimizer``'s first parameter group (saved and restored with it)."""
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        for key in STATE_KEYS:
            group.setdefault(key, None)
        if group["log_dual_mu"] is None:
            group["log_dual_mu"], group["log_r_eff"] = 0.0, self.settings.r_max

    @property
    def state(self) -> dict:
        """The controller's state (mu, smoothed gap, smoothed L_ft(vartheta), the last step it updated at, ...)."""
        if self.optimizer is None:
            raise RuntimeError("DualController.bind(optimizer) must be called before training")
        return self.optimizer.param_groups[0]

    @property
    def mu(self) -> float:
        """The dual variable now (0 until the gap first exceeds delta)."""
        return float(self.state["log_dual_mu"])

    def observe(self, step: int) -> None:
        """Update mu from the gap of the current global step's lower batch (once per upper phase step)."""
        s, st = self.settings, self.state
        if st["dual_step"] == step or "total" not in self.lower.last or "total" not in self.twin.last:
            return
        l_theta, l_vartheta = float(self.lower.last["total"]), float(self.twin.last["total"])
        raw = l_theta - l_vartheta
        st["log_dual_gap"] = smooth(st["log_dual_gap"], raw, s.beta)
        st["dual_ref"] = smooth(st["dual_ref"], l_vartheta, s.beta)
        delta = max(s.delta_frac * st["dual_ref"], 1e-12)
        st["log_dual_mu"] = dual_step(self.mu, st["log_dual_gap"], delta, s.rho)
        st["log_dual_delta"], st["log_dual_raw_gap"], st["dual_step"] = delta, raw, step
        st["log_r_eff"] = effective_r(s.r_max, st["log_dual_mu"])

    def __call__(self, step: int) -> float:
        self.observe(step)
        return self.warmup(step) / (1.0 + self.mu)

    def summary(self) -> dict:
        """The final dual state, for bilevel_summary.json."""
        st = self.state
        return {"delta_frac": self.settings.delta_frac, "rho": self.settings.rho, "smoothing": self.settings.beta,
                "r_max": self.settings.r_max, "mu": self.mu, "gap": st["log_dual_gap"], "delta": st["log_dual_delta"],
                "r_eff": st["log_r_eff"]}
