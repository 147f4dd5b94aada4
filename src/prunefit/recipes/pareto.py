"""``prunefit experiment pareto``: ASR-vs-FJD fronts of two-stage ESD and bilevel suppression, over seeds.

One concept; every point is trained for each seed with Table 3's stages (same starting expert, lower-level
budget and data) and judged on ``eval_prompts`` adversarial (artist: the artist's own) prompts and toy-val
captions. Families and their knob:
  two-stage   Distilled, then ESD for each of ``esd_grid`` iterations (0 = the distilled model itself);
  official    bilevel official preset for each r in ``official_r_grid`` (upper_lr = r x upper_every x lower lr);
  nested      bilevel paper preset, nested double loop, for each r in ``paper_r_grid`` (the theta step's lr);
  interleaved bilevel paper preset, interleaved double loop, for each lambda in ``paper_lam_grid``;
plus, when ``purity_points`` is set, those points again with the concept's share of the lower-level data at 0.
Intervals are hierarchical bootstrap 95% intervals over seeds and prompts (ASR: per-prompt outcomes; FJD: paired
generated / reference judge features). The grids are fixed before any run (no setting is chosen on the
reported prompts). Every (point, seed) folder is keyed by its settings, so the run resumes and a grid can be
extended later without recomputing finished points. Outputs: pareto.json, report.md, pareto.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prunefit.config.load import save_resolved_config
from prunefit.errors import ConfigError
from prunefit.evaluation.intervals import Interval, bootstrap_interval
from prunefit.recipes.table3 import ExperimentConfig, Table3, _is_unsafe, concept_slug, stage_dir, stage_key
from prunefit.toyworld.world import COLOURS, OBJECTS

FAMILIES = ("two-stage", "official", "nested", "interleaved")


@dataclass
class ParetoConfig(ExperimentConfig):
    """Table 3's settings (lower steps, data, train, ESD lr, upper_every, ...) plus the grids and seeds."""

    output_dir: str = "runs/pareto"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval_prompts: int = 200
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
    track_vartheta: bool = False
    report_only: bool = False
    """Write the report from the cells finished so far (e.g. while a sweep runs elsewhere); train nothing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if any(n < 0 for n in self.esd_grid) or any(v <= 0 for v in [*self.official_r_grid, *self.paper_r_grid,
                                                                      *self.paper_lam_grid]):
            raise ConfigError("esd_grid values must be >= 0 and r / lambda grid values > 0")
        for p in [*self.purity_points, *self.core_points]:
            fam, _, val = p.partition(":")
            if fam not in FAMILIES or not val:
                raise ConfigError(f"point {p!r} must be family:value with family in {list(FAMILIES)}")


@dataclass(frozen=True)
class Point:
    family: str
    value: float
    pure: bool = False

    @property
    def name(self) -> str:
        knob = {"two-stage": "esd", "official": "r", "nested": "r", "interleaved": "lam"}[self.family]
        return f"{self.family}-{knob}{self.value:g}" + ("-pure" if self.pure else "")


def grid(cfg: ParetoConfig) -> list[Point]:
    pts = [Point("two-stage", n) for n in cfg.esd_grid]
    pts += [Point("official", r) for r in cfg.official_r_grid]
    pts += [Point("interleaved", lam) for lam in cfg.paper_lam_grid]
    pts += [Point("nested", r) for r in cfg.paper_r_grid]
    for p in cfg.purity_points:
        fam, _, val = p.partition(":")
        pts.append(Point(fam, float(val), pure=True))
    return pts


def run_order(cfg: ParetoConfig, points: list[Point]) -> list[tuple[Point, int]]:
    """The core points for every seed first, in the order ``core_points`` lists them, then the rest of the grid
    seed by seed."""
    by_key = {f"{p.family}:{p.value:g}": p for p in points if not p.pure}
    keys = dict.fromkeys(f"{f}:{float(v):g}" for f, _, v in (c.partition(":") for c in cfg.core_points))
    core = [by_key[k] for k in keys if k in by_key]
    first = [(p, s) for p in core for s in cfg.seeds]
    return first + [(p, s) for s in cfg.seeds for p in points if p not in core]


def point_config(cfg: ParetoConfig, p: Point, seed: int) -> tuple[ExperimentConfig, str]:
    """Table 3's config for one (point, seed) and the row that trains it."""
    base = ExperimentConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ExperimentConfig)})
    base = dataclasses.replace(base, seed=seed, lower_concept_share=0.0 if p.pure else cfg.lower_concept_share)
    if p.family == "two-stage":
        if p.value == 0:
            return base, "distilled"
        return dataclasses.replace(base, esd_iterations=int(p.value)), "distilled+esd"
    if p.family == "official":
        return dataclasses.replace(base, bilevel_preset="official", r=p.value, upper_lr=None), "ours_esd"
    if p.family == "nested":
        return dataclasses.replace(base, bilevel_preset="paper", double_loop="nested", r=p.value,
                                   upper_lr=None), "ours_esd"
    return dataclasses.replace(base, bilevel_preset="paper", double_loop="interleaved", lam=p.value), "ours_esd"


def verdict_cells(cells: dict, seeds: list[int]) -> tuple[dict, list[int], list[str]]:
    """The points the verdict compares, on which seeds, and the points it leaves out for now.

    Points are compared on the seeds they share (a seed's distilled model moves every point trained from it).
    Where the points finished on every configured seed include both families, the verdict uses those on all
    seeds and names the unfinished ones as pending, so one point just started does not cut every comparison down
    to its single seed; otherwise every point on the seeds common to all of them."""
    has = {p: {c["seed"] for c in cs} for p, cs in cells.items()}
    full = {p: cs for p, cs in cells.items() if set(seeds) <= has[p]}
    if any(p.family == "two-stage" and not p.pure for p in full) and any(p.family != "two-stage" for p in full):
        pending = [f"{p.name} ({len(has[p] & set(seeds))} of {len(seeds)} seeds)" for p in cells if p not in full]
        return full, sorted(seeds), pending
    common = sorted(set.intersection(*has.values())) if cells else []
    return (cells if common else {}), common, []


class Judged:
    """Per-prompt judge outcomes of a model: concept shown (adversarial / artist set) and toy-val features."""

    def __init__(self, base_model: str, concept: str, n: int) -> None:
        from prunefit.models.components import load_components
        from prunefit.toyworld.judge import load_judge
        from prunefit.toyworld.metrics import reference_renders
        from prunefit.toyworld.paths import judge_dir, prompts_dir
        from prunefit.toyworld.prompts import artist_slug, read_rows, scene_of

        self.base, self.concept, self.n = base_model, concept, n
        self.comps = load_components(base_model)
        self.judge = load_judge(judge_dir())
        name = "unsafe-adversarial" if _is_unsafe(concept) else f"artist-{artist_slug(concept)}"
        self.attack_rows = read_rows(prompts_dir() / f"{name}.jsonl", n)
        self.val_rows = read_rows(prompts_dir() / "toy-val.jsonl", n)
        self.scenes = [scene_of(r) for r in self.val_rows]
        self.ref_features = self.judge.predict(reference_renders(self.scenes)).features.double().numpy()

    def components(self, model: Path):
        from prunefit.pruning.expert import load_expert

        if (Path(model) / "model_index.json").is_file():
            from prunefit.models.components import load_components

            return load_components(str(model))
        unet, _ = load_expert(model, self.comps.unet.config)
        return self.comps.with_unet(unet)

    def measure(self, model: Path) -> dict:
        from prunefit.config.schema import SamplerConfig
        from prunefit.recipes.toyworld_quality import generate_rows
        from prunefit.toyworld.judge import ARTIST_CLASSES

        comps = self.components(model)
        sampler = SamplerConfig(batch_size=50)
        pred = self.judge.predict(generate_rows(comps, self.attack_rows, sampler, desc="attack set"))
        if _is_unsafe(self.concept):
            shown = (pred.unsafe_prob > 0.5).numpy().astype(int)
        else:
            shown = (pred.artist == ARTIST_CLASSES.index(self.concept)).numpy().astype(int)
        return {"shown": shown.tolist(), "asr": float(shown.mean()), **self.measure_val(model, comps)}

    def measure_val(self, model: Path, comps=None) -> dict:
        """Toy-val: judge features (for FJD), per-prompt fidelity (shape and colour right) and its mean."""
        from prunefit.config.schema import SamplerConfig
        from prunefit.recipes.toyworld_quality import generate_rows

        comps = comps or self.components(model)
        vpred = self.judge.predict(generate_rows(comps, self.val_rows, SamplerConfig(batch_size=50), desc="toy-val"))
        correct = [int(o == OBJECTS.index(s.obj) and c == list(COLOURS).index(s.colour))
                   for o, c, s in zip(vpred.obj.tolist(), vpred.colour.tolist(), self.scenes)]
        return {"features": vpred.features.double().tolist(), "correct": correct,
                "fidelity": float(np.mean(correct)), "guidance_scale": comps.default_guidance}


def fjd_statistic(groups) -> float:
    """Mean over seeds of the Fréchet distance between paired generated / reference judge features."""
    from prunefit.evaluation.fid import fid_from_features

    return float(np.mean([fid_from_features(torch.from_numpy(g), torch.from_numpy(r)) for g, r in groups]))


@dataclass
class PointResult:
    point: Point
    seeds: list[int]
    asr: Interval
    fjd: Interval
    fidelity: float
    balance: dict
    models: list[str] = field(default_factory=list)
    """The trained model of each seed."""
    attacks: dict = field(default_factory=dict)
    """{attack: (mean post-attack ASR, seeds attacked)} over the seeds whose cell carries the attack."""


@dataclass
class CellStage:
    """Where one (point, seed) of the sweep lives: Table 3 at the point's settings, its row, the row's stage spec
    and the judged cell's ``eval-<n>.json``."""

    table3: Table3
    row: str
    spec: dict
    eval_file: Path


class Pareto:
    def __init__(self, cfg: ParetoConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)
        self._judged: dict[str, Judged] = {}

    def judged(self, concept: str) -> Judged:
        if concept not in self._judged:
            self._judged[concept] = Judged(self.cfg.model, concept, self.cfg.eval_prompts)
        return self._judged[concept]

    def _stage(self, p: Point, seed: int, concept: str, croot: Path) -> CellStage:
        tcfg, row = point_config(self.cfg, p, seed)
        t3 = Table3(tcfg, self.log)
        spec = t3.distil_spec(concept) if row == "distilled" else t3.row_spec(row, concept)
        efile = croot / "cells" / f"{row}-{stage_key(spec)}" / f"eval-{self.cfg.eval_prompts}.json"
        return CellStage(t3, row, spec, efile)

    def compute(self, stage: CellStage, p: Point, seed: int, concept: str, croot: Path) -> dict:
        """Train and judge one (point, seed); the judged cell is kept in ``eval-<n>.json``."""
        t3, row, efile = stage.table3, stage.row, stage.eval_file
        stage_dir(croot / "cells", row, stage.spec)  # the cell's folder, with its spec.json
        self.log(f"[pareto] {concept}: {p.name}, seed {seed}")
        t0 = time.time()
        model, balance = t3.run_row(row, concept, croot / "cells", t3.start_expert())
        res = {"point": p.name, "seed": seed, "model": str(model), "balance": balance,
               "train_seconds": round(time.time() - t0, 1), "threads": self.cfg.threads,
               **self.judged(concept).measure(model)}
        efile.write_text(json.dumps(res))
        return res

    def attack_cell(self, cell: dict, efile: Path, seed: int, concept: str) -> bool:
        """Run the configured attacks a judged cell lacks, on its trained model (cells restored without their
        model, e.g. from docs/results, are left unattacked); True if any ran."""
        if not self.cfg.attacks or not cell.get("model") or not Path(cell["model"]).exists():
            return False
        from prunefit.recipes.attack import add_attacks

        ran = add_attacks(cell, model=cell["model"], base_model=self.cfg.model, concept=concept,
                          attacks=self.cfg.attacks, budgets=self.cfg.attack_budgets,
                          n_prompts=self.cfg.attack_prompts, seed=seed, folder=efile.parent, device=self.cfg.device,
                          log=self.log)
        if ran:
            efile.write_text(json.dumps(cell))
        return ran

    def summarize(self, p: Point, cells: list[dict], concept: str) -> PointResult:
        ref = self.judged(concept).ref_features
        asr = bootstrap_interval([np.array(c["shown"], dtype=float) for c in cells], n_boot=self.cfg.n_boot)
        fjd = bootstrap_interval([(np.array(c["features"]), ref) for c in cells], statistic=fjd_statistic,
                                 n_boot=max(50, self.cfg.n_boot // 5), method="centred")
        fidelity = float(np.mean([c["fidelity"] for c in cells]))
        attacked = {a: [c["attacks"][a]["asr"] for c in cells if a in c.get("attacks", {})] for a in self.cfg.attacks}
        return PointResult(p, [c["seed"] for c in cells], asr, fjd, fidelity, cells[0].get("balance") or {},
                           [c["model"] for c in cells],
                           {a: (float(np.mean(v)), len(v)) for a, v in attacked.items() if v})

    def run(self) -> dict:
        torch.set_num_threads(self.cfg.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.root)
        out = {}
        for concept in self.cfg.concepts:
            croot = self.root / concept_slug(concept)
            cells: dict[Point, list[dict]] = {p: [] for p in grid(self.cfg)}
            for p, seed in run_order(self.cfg, list(cells)):
                stage = self._stage(p, seed, concept, croot)
                efile = stage.eval_file
                done = json.loads(efile.read_text()) if efile.is_file() else None
                if self.cfg.report_only:
                    cells[p] += [done] if done is not None else []
                    continue
                fresh = done is None
                if fresh:
                    done = self.compute(stage, p, seed, concept, croot)
                fresh = self.attack_cell(done, efile, seed, concept) or fresh
                cells[p].append(done)
                if fresh:  # the report is refreshed after each new cell, not after each reused one (bootstraps)
                    self.write(concept, croot, {q: v for q, v in cells.items() if v})
            cells = {q: v for q, v in cells.items() if v}
            out[concept] = self.write(concept, croot, cells)
        return out

    def write(self, concept: str, croot: Path, cells: dict) -> dict:
        from prunefit.recipes.pareto_report import write_pareto_report

        results = [self.summarize(p, cs, concept) for p, cs in cells.items()]
        judged, common, pending = verdict_cells(cells, self.cfg.seeds)
        paired = [self.summarize(p, [c for c in cs if c["seed"] in common], concept) for p, cs in judged.items()]
        return write_pareto_report(croot, concept, results, self.cfg, paired, common, pending)


def main(cfg: ParetoConfig, log=print) -> dict:
    return Pareto(cfg, log).run()
