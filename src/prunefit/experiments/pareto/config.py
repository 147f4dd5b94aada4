"""The Pareto experiment's config: the Table 3 settings every point trains with, the grids and the seeds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from prunefit.errors import ConfigError
from prunefit.experiments.table3.config import ExperimentConfig

FAMILIES = ("two-stage", "official", "nested", "interleaved")


def _table3_defaults() -> ExperimentConfig:
    return ExperimentConfig(eval_prompts=200, track_vartheta=False)


@dataclass
class ParetoConfig:
    """Where the sweep writes, the Table 3 settings each (point, seed) trains and is judged with (``table3``: lower
    steps, data, train, ESD lr, upper_every, concepts, eval_prompts, attacks, ...), plus the grids and seeds."""

    output_dir: str = "runs/pareto"
    table3: ExperimentConfig = field(default_factory=_table3_defaults)
    """Table 3's settings of every point (its ``output_dir`` follows this config's; ``seed`` and ``rows`` are set
    per point)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    esd_grid: list[int] = field(default_factory=lambda: [0, 50, 100, 200, 400])
    official_r_grid: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0])
    paper_r_grid: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0])
    paper_lam_grid: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0])
    purity_points: list[str] = field(default_factory=lambda: ["two-stage:100", "two-stage:200", "official:0.25",
                                                              "official:0.5", "interleaved:100"])
    """Points (family:value) rerun with the concept's share of the lower-level data set to 0."""
    core_points: list[str] = field(default_factory=lambda: ["two-stage:0", "two-stage:100", "two-stage:400",
                                                             "official:0.25", "official:1.0", "interleaved:100",
                                                             "nested:0.25"])
    """Points (family:value) computed for every seed first, so a partial run already has intervals where they
    decide most; the rest of the grid follows seed by seed."""
    n_boot: int = 1000
    report_only: bool = False
    """Write the report from the cells finished so far (e.g. while a sweep runs elsewhere); train nothing."""
    renamed_keys: ClassVar[dict[str, str]] = {f.name: f"table3.{f.name}" for f in dataclasses.fields(ExperimentConfig)
                                              if f.name != "output_dir"}
    """ParetoConfig inherited Table 3's keys at the top level once (``lower_steps``, ``data.*``, ...); they are
    read there still, with a one-line warning."""

    def __post_init__(self) -> None:
        self.table3.output_dir = self.output_dir  # the start expert and every cell live under the sweep's folder
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if any(n < 0 for n in self.esd_grid) or any(v <= 0 for v in [*self.official_r_grid, *self.paper_r_grid,
                                                                      *self.paper_lam_grid]):
            raise ConfigError("esd_grid values must be >= 0 and r / lambda grid values > 0")
        for p in [*self.purity_points, *self.core_points]:
            fam, _, val = p.partition(":")
            if fam not in FAMILIES or not val:
                raise ConfigError(f"point {p!r} must be family:value with family in {list(FAMILIES)}")
