"""The metric registry: ``register_metric(name, fn, kind, summary)``; ``get_metric(name)`` with teaching errors.

A metric is a function ``fn(ctx: EvalContext, cfg) -> MetricResult``. ``kind`` is "images" (reads a
generation manifest) or "model" (measures a UNet). Heavy models (Inception, CLIP, NudeNet, the judge)
are built by loaders the context caches, and the math lives in pure functions that take them as
arguments, so it is unit-tested with fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from prunefit.utils.registry import Registry


@dataclass
class MetricResult:
    """Named values of one metric and the protocol that produced them (recorded in results.json)."""

    values: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    per_image: dict[str, Any] = field(default_factory=dict)
    """Optional per-id details (e.g. which prompts were flagged)."""


@dataclass(frozen=True)
class MetricEntry:
    name: str
    fn: Callable[..., MetricResult]
    kind: str
    summary: str


def _load_builtin() -> None:
    from prunefit.evaluation import metrics  # noqa: F401  (registers the built-in metrics)


_METRICS: Registry[MetricEntry] = Registry("metric", _load_builtin)


def register_metric(name: str, fn: Callable[..., MetricResult], kind: str, summary: str) -> None:
    if kind not in ("images", "model"):
        raise ValueError(f"metric kind must be 'images' or 'model', got {kind!r}")
    _METRICS.register(name, MetricEntry(name, fn, kind, summary))


def get_metric(name: str) -> MetricEntry:
    return _METRICS.get(name)


def list_metrics() -> list[MetricEntry]:
    return _METRICS.all()
