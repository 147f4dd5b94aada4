"""The metric registry: ``register_metric(name, fn, kind, summary, config=...)``; ``get_metric(name)`` with
teaching errors.

A metric is a function ``fn(ctx: EvalContext, cfg) -> MetricResult``. ``kind`` is "images" (reads a
generation manifest) or "model" (measures a UNet). The entry owns its config class: ``prunefit evaluate``
gets one ``<section>.key=value`` section per registered config (``section`` defaults to the metric's name;
metrics that share settings share a section, e.g. macs and latency read ``cost``). Heavy models (Inception,
CLIP, NudeNet, the judge) are built by loaders the context caches, and the math lives in pure functions that
take them as arguments, so it is unit-tested with fakes. A plug-in package declares an entry point in the group
``prunefit.metrics`` naming a ``MetricEntry`` or a callable that calls ``register_metric``; it is loaded after the
built-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from prunefit.evaluation.context import MetricResult  # noqa: F401  (re-exported)
from prunefit.utils.registry import Registry


@dataclass(frozen=True)
class MetricEntry:
    name: str
    fn: Callable[..., MetricResult]
    kind: str
    summary: str
    config_cls: Optional[type] = None
    """The metric's settings (None = it has none; ``fn`` then gets None)."""
    section: str = ""
    """The evaluate config's section holding them ("" = the metric's name)."""

    def __post_init__(self) -> None:
        if self.kind not in ("images", "model"):
            raise ValueError(f"metric kind must be 'images' or 'model', got {self.kind!r}")
        if not self.section:
            object.__setattr__(self, "section", self.name)


def _load_builtin() -> None:
    from prunefit.evaluation import metrics

    metrics.register_builtin(register_metric)


_METRICS: Registry[MetricEntry] = Registry("metric", _load_builtin, group="prunefit.metrics", entry_type=MetricEntry)


def register_metric(name: str, fn: Callable[..., MetricResult], kind: str, summary: str,
                    config: Optional[type] = None, section: Optional[str] = None) -> None:
    """Register a metric: ``kind`` 'images' (reads a run's images) or 'model' (reads its model)."""
    _METRICS.register(name, MetricEntry(name, fn, kind, summary, config, section or name))


def unregister_metric(name: str) -> None:
    """Remove a registered metric (a plugin's or a test's)."""
    _METRICS.unregister(name)


def get_metric(name: str) -> MetricEntry:
    """The registered metric ``name`` (an error lists the available ones)."""
    return _METRICS.get(name)


def list_metrics() -> list[MetricEntry]:
    """All registered metrics."""
    return _METRICS.all()


def listing() -> list[str]:
    """``prunefit list metrics``: one line per metric (name, kind, summary)."""
    return [f"{m.name:12s} [{m.kind}] {m.summary}" for m in list_metrics()]


def metric_sections() -> list[tuple[str, type]]:
    """``(section, config class)`` of every registered metric with settings, once per section."""
    sections: dict[str, type] = {}
    for m in list_metrics():
        if m.config_cls is None:
            continue
        if sections.setdefault(m.section, m.config_cls) is not m.config_cls:
            raise ValueError(f"metrics share section {m.section!r} with different config classes")
    return sorted(sections.items())
