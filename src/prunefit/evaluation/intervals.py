"""Bootstrap confidence intervals over seeds and prompts (pure functions, numpy only).

A measurement is a list of groups (one per seed), each an array of per-prompt values. The hierarchical
bootstrap resamples the seeds with replacement, then the prompts within each drawn seed, and evaluates the
statistic on the resampled groups; the interval is the percentile interval of those draws. With one seed it
reduces to the ordinary bootstrap over prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    """The statistic on the data as measured."""
    low: float
    high: float
    level: float
    n_groups: int
    """Seeds."""
    n_boot: int

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        return (f"{scale * self.estimate:.{digits}f} [{scale * self.low:.{digits}f}, "
                f"{scale * self.high:.{digits}f}]")


def mean_of_groups(groups: Sequence[np.ndarray]) -> float:
    """The mean over seeds of each seed's mean (every seed weighs the same)."""
    return float(np.mean([np.mean(g) for g in groups]))


def bootstrap_interval(groups: Sequence[np.ndarray], statistic: Callable[[Sequence[np.ndarray]], float] = mean_of_groups,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of ``statistic`` under the hierarchical bootstrap (seeds, then prompts within a seed).
    ``groups``: one array per seed; row i of every array belongs to prompt i when the statistic pairs rows
    (e.g. generated and reference features), so one index draw is applied to all arrays of a group (a group
    may be a tuple of arrays with equal length)."""
    if not groups:
        raise ValueError("bootstrap_interval needs at least one group")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError("level must be in (0, 1) and n_boot >= 1")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(len(groups), size=len(groups))
        draws[b] = statistic([_resample(groups[i], rng) for i in picked])
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Interval(statistic(list(groups)), float(low), float(high), level, len(groups), n_boot)


def _resample(group, rng: np.random.Generator):
    if isinstance(group, tuple):
        idx = rng.integers(len(group[0]), size=len(group[0]))
        return tuple(g[idx] for g in group)
    return group[rng.integers(len(group), size=len(group))]
