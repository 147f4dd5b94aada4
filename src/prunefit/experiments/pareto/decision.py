"""The registered decision rule of the Pareto test: paired per-seed deltas against a seed's own front, and the verdict.

A bilevel point is compared, seed by seed, with the two-stage front that the same seed's distilled model spans
(every model of a seed shares its start expert, lower data stream and evaluation prompts with their sampling seeds):

    Delta_s = FJD_s(bilevel) - front_s(ASR_s(bilevel))

``front_s`` is the seed's non-dominated two-stage points joined by straight lines in (ASR, FJD); outside the ASR range
it spans, the nearest end point is the match, and the gap in ASR is recorded (``dASR_s = ASR_s(bilevel) -
ASR_s(match)``, in points). The verdict (``decide``) follows the rule a YAML fixed before the runs (``DecisionRule``):

- YES: the upper bound of the two-sided (1 - 2 alpha) t-interval of mean Delta is below 0, mean Delta <= -margin and
  mean dASR <= asr_tolerance;
- NO: the interval lies inside (-margin, +margin) (equivalence) or above 0;
- INCONCLUSIVE otherwise (add seeds, up to ``max_seeds``).
The one-sided t-test and Wilcoxon signed-rank p-values (H1: mean Delta < 0) are reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from prunefit.errors import ConfigError


@dataclass
class DecisionRule:
    """The rule, fixed in a registered YAML before any run (``registered`` of the Pareto config)."""

    primary: str = ""
    """The bilevel point (family:value, e.g. ``official-full:0.5``) whose paired Delta decides the claim."""
    against: str = "two-stage"
    """The family whose per-seed front it is matched on."""
    alpha: float = 0.025
    """One-sided level of the t-test and Wilcoxon test; the t-interval is two-sided at 1 - 2 alpha."""
    margin: float = 0.15
    """Equivalence margin and minimal effect in FJD units (FID units on SD)."""
    asr_tolerance: float = 3.0
    """Largest mean ASR gap (percentage points) at the matched point that still counts as the same ASR."""
    seeds: list[int] = field(default_factory=list)
    """The seeds the verdict is computed on (all of them must be finished)."""
    interim_seeds: list[int] = field(default_factory=list)
    """Seeds added when the first look is INCONCLUSIVE (the one interim look; up to ``max_seeds`` in all)."""
    max_seeds: int = 16
    secondary: list[str] = field(default_factory=list)
    """Further contrasts (``point`` or ``point@family``: against another family's front), Holm-corrected."""
    registered_on: str = ""
    """The date the rule was committed (before its runs' commits)."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5 or self.margin <= 0 or self.asr_tolerance < 0:
            raise ConfigError("registered: alpha must be in (0, 0.5), margin > 0 and asr_tolerance >= 0")
        if len(set(self.seeds)) != len(self.seeds) or len([*self.seeds, *self.interim_seeds]) > self.max_seeds:
            raise ConfigError(f"registered: seeds must be distinct and at most max_seeds={self.max_seeds} in all")


@dataclass(frozen=True)
class FrontMatch:
    """Where a point meets a front: the front's FJD at the point's ASR and the ASR it was read at."""

    fjd: float
    asr: float


def front_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated (ASR, FJD) points (lower is better on both), sorted by ASR."""
    pts = sorted(set(points))
    keep = [p for p in pts if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in pts)]
    return sorted(keep)


def front_at(points: Sequence[tuple[float, float]], asr: float) -> FrontMatch:
    """The front of ``points`` (ASR, FJD) read at ``asr``: linear between its neighbours, the nearest end point
    outside the ASR range it spans."""
    front = front_points(points)
    if not front:
        raise ValueError("an empty front")
    if asr <= front[0][0]:
        return FrontMatch(front[0][1], front[0][0])
    if asr >= front[-1][0]:
        return FrontMatch(front[-1][1], front[-1][0])
    for (a0, f0), (a1, f1) in zip(front, front[1:]):
        if a0 <= asr <= a1:
            w = 0.0 if a1 == a0 else (asr - a0) / (a1 - a0)
            return FrontMatch(f0 + w * (f1 - f0), asr)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SeedDelta:
    seed: int
    asr: float
    """The point's ASR (0..1)."""
    fjd: float
    front_fjd: float
    front_asr: float

    @property
    def delta(self) -> float:
        """FJD(point) - front(ASR(point))."""
        return self.fjd - self.front_fjd

    @property
    def dasr(self) -> float:
        """ASR(point) - ASR of the matched front point, in percentage points."""
        return 100.0 * (self.asr - self.front_asr)


def seed_deltas(point: dict[int, tuple[float, float]], front: dict[int, list[tuple[float, float]]]) -> list[SeedDelta]:
    """Per seed: the point's (ASR, FJD) against that seed's front points; seeds missing either are left out."""
    out = []
    for s in sorted(set(point) & set(front)):
        if not front[s]:
            continue
        asr, fjd = point[s]
        m = front_at(front[s], asr)
        out.append(SeedDelta(s, asr, fjd, m.fjd, m.asr))
    return out


@dataclass(frozen=True)
class Decision:
    verdict: str
    """YES, NO, INCONCLUSIVE, or PENDING (not every registered seed has finished)."""
    n: int
    mean_delta: float
    interval: tuple[float, float]
    """Two-sided (1 - 2 alpha) t-interval of mean Delta."""
    p_t: float
    """One-sided t-test p-value, H1: mean Delta < 0."""
    p_wilcoxon: float
    """One-sided Wilcoxon signed-rank p-value, H1: Delta is shifted below 0."""
    mean_dasr: float
    reason: str
    deltas: tuple[SeedDelta, ...] = ()

    def line(self, quality: str = "FJD") -> str:
        """One line for reports (``quality``: the metric's name, FJD on the toy world, FID on SD)."""
        lo, hi = self.interval
        return (f"{self.verdict}: mean Delta {quality} {self.mean_delta:+.3f} [{lo:+.3f}, {hi:+.3f}] over {self.n} "
                f"seeds, one-sided t p = {self.p_t:.4f}, Wilcoxon p = {self.p_wilcoxon:.4f}, mean dASR "
                f"{self.mean_dasr:+.1f} points ({self.reason})")


def t_interval(x: Sequence[float], level: float) -> tuple[float, float]:
    """Two-sided t-interval of the mean of ``x`` at ``level`` (e.g. 0.95)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return (-math.inf, math.inf)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return (float(x.mean() - half), float(x.mean() + half))


def one_sided_p(x: Sequence[float]) -> tuple[float, float]:
    """(t-test, Wilcoxon signed-rank) one-sided p-values for H1: the centre of ``x`` is below 0."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return (math.nan, math.nan)
    p_t = float(stats.ttest_1samp(x, 0.0, alternative="less").pvalue) if x.std() > 0 else (
        0.0 if x.mean() < 0 else 1.0)
    p_w = float(stats.wilcoxon(x, alternative="less").pvalue) if np.any(x != 0) else 1.0
    return p_t, p_w


def decide(deltas: Sequence[SeedDelta], rule: DecisionRule, seeds: Optional[Sequence[int]] = None) -> Decision:
    """The registered rule applied to the per-seed deltas (``seeds``: those that must all be present, default the
    rule's own)."""
    want = list(seeds if seeds is not None else rule.seeds)
    have = [d for d in deltas if not want or d.seed in want]
    x = [d.delta for d in have]
    mean = float(np.mean(x)) if x else math.nan
    dasr = float(np.mean([d.dasr for d in have])) if have else math.nan
    lo, hi = t_interval(x, 1 - 2 * rule.alpha)
    p_t, p_w = one_sided_p(x)
    missing = sorted(set(want) - {d.seed for d in have})
    if missing or len(x) < 2:
        verdict, reason = "PENDING", f"waiting for seed(s) {missing}" if missing else "fewer than 2 seeds"
    elif hi < 0 and mean <= -rule.margin and dasr <= rule.asr_tolerance:
        verdict, reason = "YES", f"interval below 0, mean <= -{rule.margin:g}, dASR <= {rule.asr_tolerance:g}"
    elif (lo > -rule.margin and hi < rule.margin) or lo > 0:
        verdict = "NO"
        reason = "interval above 0" if lo > 0 else f"interval inside (-{rule.margin:g}, +{rule.margin:g})"
    else:
        verdict, reason = "INCONCLUSIVE", "neither YES nor NO by the registered rule"
    return Decision(verdict, len(x), mean, (lo, hi), p_t, p_w, dasr, reason, tuple(have))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections at family-wise level ``alpha`` (NaN p-values are never rejected)."""
    order = sorted(range(len(pvalues)), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    reject = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        p = pvalues[i]
        if math.isnan(p) or p > alpha / (m - rank):
            break
        reject[i] = True
    return reject


@dataclass(frozen=True)
class Contrast:
    """One registered contrast: a point against a family's per-seed front, and its decision."""

    point: str
    against: str
    decision: Decision
    holm_reject: Optional[bool] = None
    """Secondary contrasts: whether Holm's procedure rejects H0 (no gain) at the rule's alpha."""


@dataclass(frozen=True)
class RegisteredResult:
    primary: Contrast
    looks: tuple[Decision, ...]
    """The primary's decision at each look (the registered seeds, then with the interim seeds)."""
    secondary: tuple[Contrast, ...]


def registered_decisions(cells: dict[str, list[dict]], rule: DecisionRule, fjd_of) -> RegisteredResult:
    """The registered rule over judged cells keyed ``family:value`` (each with ``seed`` and ``asr``); ``fjd_of(cell)``
    gives a cell's FJD. With interim seeds, each of the two looks tests at alpha / 2 (Bonferroni over looks) and the
    second is taken only when the first is INCONCLUSIVE."""
    def per_seed(key: str) -> dict[int, tuple[float, float]]:
        return {c["seed"]: (float(c["asr"]), float(fjd_of(c))) for c in cells.get(key, [])}

    def front(family: str) -> dict[int, list[tuple[float, float]]]:
        out: dict[int, list[tuple[float, float]]] = {}
        for key, cs in cells.items():
            if key.split(":")[0] == family:
                for c in cs:
                    out.setdefault(c["seed"], []).append((float(c["asr"]), float(fjd_of(c))))
        return out

    looks_alpha = rule.alpha / 2 if rule.interim_seeds else rule.alpha
    at = dataclasses.replace(rule, alpha=looks_alpha) if looks_alpha != rule.alpha else rule
    primary_deltas = seed_deltas(per_seed(rule.primary), front(rule.against))
    looks = [decide(primary_deltas, at, rule.seeds)]
    if looks[0].verdict == "INCONCLUSIVE" and rule.interim_seeds:
        looks.append(decide(primary_deltas, at, [*rule.seeds, *rule.interim_seeds]))
    final = looks[-1]
    seeds = [d.seed for d in final.deltas]
    secondary = []
    for text in rule.secondary:
        point, _, family = text.partition("@")
        family = family or rule.against
        secondary.append(Contrast(point, family, decide(seed_deltas(per_seed(point), front(family)), at, seeds)))
    rejects = holm([c.decision.p_t for c in secondary], rule.alpha)
    secondary = [dataclasses.replace(c, holm_reject=r) for c, r in zip(secondary, rejects)]
    return RegisteredResult(Contrast(rule.primary, rule.against, final), tuple(looks), tuple(secondary))
