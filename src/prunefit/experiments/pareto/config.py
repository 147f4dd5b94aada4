"""The Pareto experiment's config: the Table 3 settings every point trains with, the grids and the seeds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from prunefit.errors import ConfigError
from prunefit.experiments.pareto.decision import DecisionRule
from prunefit.experiments.table3.config import ExperimentConfig

FAMILIES = ("two-stage", "official", "official-full", "appc", "constrained", "nested", "interleaved", "sequential",
            "redistil")
UPPER_METHODS = ("esd", "advunlearn")
VAL_SETS = ("toy-val", "toy-world", "toy-narrow")


def _table3_defaults() -> ExperimentConfig:
    t = ExperimentConfig(eval_prompts=200, track_vartheta=False)
    t.concepts = t.kept_artists = None  # the model's defaults (toy world: skull, 2 kept artists; SD: nudity), set
    return t                            # once the model is known (by the loader, or in ParetoConfig.__post_init__)


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
    official_full_r_grid: list[float] = field(default_factory=list)
    """The official preset with every parameter trained (the authors' code; ``official`` trains the two-stage ESD
    row's subset, ESD-u / ESD-x), one point per r."""
    appc_r_grid: list[float] = field(default_factory=list)
    """The App. C reading (bilevel preset ``appc``: ESD steps on rollouts, concept name, batch 1, every
    ``appc_every`` steps), one point per r."""
    appc_every: int = 20
    constrained_delta_grid: list[float] = field(default_factory=list)
    """The constrained preset (dual ascent on the distillation gap, all parameters), one point per allowed gap
    delta (a fraction of L_ft(vartheta)); its r_max is ``constrained_r_max``."""
    constrained_r_max: float = 1.0
    upper_method: str = "esd"
    """The unlearning method of every family: esd, or advunlearn (two-stage = distil then AdvUnlearn for each
    ``esd_grid`` iteration count; the bilevel families' upper step is AdvUnlearn's)."""
    sequential_grid: list[int] = field(default_factory=list)
    """The sequential control: the ``sequential_of`` point's upper operator alone (same lr, parameters, batch,
    x_t source, conditioning and teacher reference), run after distillation for each number of steps."""
    sequential_of: str = "official-full:0.5"
    redistil_grid: list[int] = field(default_factory=list)
    """Distil -> ESD (each number of iterations) -> a short re-distillation of ``redistil_steps`` lower steps."""
    redistil_steps: int = 100
    val_set: str = "toy-val"
    """The FJD / fidelity set (the faithful regime: toy-world, the whole world but the erased concept). Toy world
    only, as are ``side_val_set``, ``side_prompts``, ``val_offset`` and ``purity_points``: on SD (any other
    ``table3.model``) a cell's quality is FID and CLIP score on COCO-val (``table3.sd``)."""
    side_val_set: Optional[str] = None
    """A second FJD set reported beside the first (the faithful regime: toy-narrow, the lower data's slice)."""
    side_prompts: int = 0
    """> 0: what FJD cannot see, on this many prompts per set: the concept's rate on plain prompts, each kept
    artist's rate, and (always) the neutral style leak on the validation set."""
    val_offset: int = 0
    """First row of the validation set used: a development slice (toy-val rows 300-499) that the reported numbers
    (rows 0 .. eval_prompts - 1) never use."""
    registered: Optional[DecisionRule] = None
    """The decision rule fixed before the runs (experiments/pareto/decision.py); None: the overlap screen only."""
    report_dir: Optional[str] = None
    """Where the report (report.md, pareto.json, pareto.png, one folder per concept) and the resolved config go;
    None: ``output_dir``. A second registered test on the same cells keeps ``output_dir`` (so the points it shares
    with the first, the start expert and the two-stage fronts, are trained once) and writes its own report here."""
    n_boot: int = 1000
    report_only: bool = False
    """Write the report from the cells finished so far (e.g. while a sweep runs elsewhere); train nothing."""
    renamed_keys: ClassVar[dict[str, str]] = {f.name: f"table3.{f.name}" for f in dataclasses.fields(ExperimentConfig)
                                              if f.name != "output_dir"}
    """ParetoConfig inherited Table 3's keys at the top level once (``lower_steps``, ``data.*``, ...); they are
    read there still, with a one-line warning."""

    def __post_init__(self) -> None:
        if self.table3.concepts is None:  # the default section, not built by the loader: resolve it for its model
            self.table3 = dataclasses.replace(self.table3)
        self.table3.output_dir = self.output_dir  # the start expert and every cell live under the sweep's folder
        if not self.table3.toy:
            self._refuse_toy_settings()
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if any(n < 0 for n in self.esd_grid) or any(v <= 0 for v in [*self.official_r_grid, *self.paper_r_grid,
                                                                      *self.paper_lam_grid]):
            raise ConfigError("esd_grid values must be >= 0 and r / lambda grid values > 0")
        if any(n < 1 for n in [*self.sequential_grid, *self.redistil_grid, self.redistil_steps, self.appc_every]):
            raise ConfigError("sequential_grid, redistil_grid, redistil_steps and appc_every must be >= 1")
        if any(v <= 0 for v in [*self.official_full_r_grid, *self.appc_r_grid, *self.constrained_delta_grid,
                                self.constrained_r_max]):
            raise ConfigError("official_full_r_grid, appc_r_grid, constrained_delta_grid and constrained_r_max "
                              "must be > 0")
        if self.upper_method not in UPPER_METHODS:
            raise ConfigError(f"upper_method must be one of {list(UPPER_METHODS)}, got {self.upper_method!r}")
        if self.upper_method != "esd" and (self.sequential_grid or self.redistil_grid):
            raise ConfigError("the sequential and redistil controls run ESD's operator: leave sequential_grid and "
                              "redistil_grid empty with upper_method=advunlearn")
        for name in [self.val_set, self.side_val_set]:
            if name is not None and name not in VAL_SETS:
                raise ConfigError(f"val_set / side_val_set must be one of {list(VAL_SETS)}, got {name!r}")
        if self.side_prompts < 0 or self.val_offset < 0:
            raise ConfigError("side_prompts and val_offset must be >= 0")
        points = [*self.purity_points, *self.core_points, self.sequential_of]
        if self.registered is not None:
            points += [self.registered.primary] + [c.split("@")[0] for c in self.registered.secondary]
            fams = [self.registered.against] + [c.split("@")[1] for c in self.registered.secondary if "@" in c]
            bad = [f for f in fams if f not in FAMILIES]
            if bad or not self.registered.primary:
                raise ConfigError(f"registered: primary must be set and fronts must be families {list(FAMILIES)}")
        for p in points:
            fam, _, val = p.partition(":")
            if fam not in FAMILIES or not val:
                raise ConfigError(f"point {p!r} must be family:value with family in {list(FAMILIES)}")
        if self.sequential_of.partition(":")[0] not in ("official", "official-full"):
            raise ConfigError(f"sequential_of must be an official or official-full point, got {self.sequential_of!r}")

    def _refuse_toy_settings(self) -> None:
        """SD (any model but the toy world): what only the toy world has is refused before any work (Table 3's
        section refuses its own: toy concepts, kept_artists, lower_concept_share)."""
        m = self.table3.model
        if self.val_set != "toy-val" or self.side_val_set is not None or self.val_offset:
            raise ConfigError(f"val_set, side_val_set and val_offset pick toy-world validation sets; on {m} quality is "
                              "FID on table3.sd.coco_n COCO-val captions: drop them")
        if self.side_prompts:
            raise ConfigError(f"side_prompts measures toy-world side sets (plain prompts, kept artists, neutral "
                              f"leak); drop it on {m}")
        if self.purity_points:
            raise ConfigError(f"purity_points rerun points with the toy world's concept share at 0; set "
                              f"purity_points=[] on {m}")
