"""``prunefit experiment pareto``: ASR-vs-FJD fronts of two-stage ESD and bilevel suppression, over seeds.

One concept; every point is trained for each seed with Table 3's stages (same starting expert, lower-level
budget and data) and judged on ``eval_prompts`` adversarial (artist: the artist's own) prompts and toy-val
captions by the toy world's judge; on SD (any other ``table3.model``) by Table 3's SD protocol
(``common/sd_judging.py``, generated with the cell's seed): NudeNet flags on the adversarial prompt file (artist: the
artist metric's), FID against the cached COCO-val reference statistics and CLIP score on ``table3.sd.coco_n``
captions. Families and their knob:
  two-stage   Distilled, then ESD for each of ``esd_grid`` iterations (0 = the distilled model itself);
  official    bilevel official preset for each r in ``official_r_grid`` (upper_lr = r x upper_every x lower lr);
  nested      bilevel paper preset, nested double loop, for each r in ``paper_r_grid`` (the theta step's lr);
  interleaved bilevel paper preset, interleaved double loop, for each lambda in ``paper_lam_grid``;
  official-full  the official preset training every parameter (the authors' code), each r in ``official_full_r_grid``;
  appc        the App. C reading (preset appc, every ``appc_every``), each r in ``appc_r_grid``;
  sequential  the control: ``sequential_of``'s upper operator alone after distillation, each step count in
              ``sequential_grid`` (is a gain the schedule's or the operator's?);
  redistil    distil -> ESD (each iteration count in ``redistil_grid``) -> ``redistil_steps`` of re-distillation;
plus, when ``purity_points`` is set, those points again with the concept's share of the lower-level data at 0.
With ``registered`` set, the verdict is the registered rule's (experiments/pareto/decision.py: paired per-seed
Delta against the seed's own front); the interval-overlap screen stays as a secondary line.
Intervals are hierarchical bootstrap 95% intervals over seeds and prompts (ASR: per-prompt outcomes; FJD: paired
generated / reference judge features; SD's FID: the generated images' features against the fixed reference
statistics, ``FidToReference``). The grids are fixed before any run (no setting is chosen on the
reported prompts). Every (point, seed) folder is keyed by its settings, so the run resumes and a grid can be
extended later without recomputing finished points. Outputs: pareto.json, report.md, pareto.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from prunefit.config.load import save_resolved_config
from prunefit.errors import DataError
from prunefit.evaluation.intervals import Interval, bootstrap_interval
from prunefit.experiments.common.attacks import add_attacks
from prunefit.experiments.common.judging import Judged, fjd_statistic
from prunefit.experiments.common.protocol import kind_of
from prunefit.experiments.common.sd_judging import FidToReference, SDJudge, read_features
from prunefit.experiments.common.stages import concept_slug, stage_dir, stage_key
from prunefit.experiments.pareto.config import ParetoConfig
from prunefit.experiments.pareto.controls import redistil_spec, run_redistil, run_sequential, sequential_spec
from prunefit.experiments.pareto.decision import registered_decisions
from prunefit.experiments.pareto.report import write_pareto_report
from prunefit.experiments.table3.config import ExperimentConfig
from prunefit.experiments.table3.run import Table3
from prunefit.utils.io import mark_done


@dataclass(frozen=True)
class Point:
    family: str
    value: float
    pure: bool = False

    @property
    def name(self) -> str:
        """The point's folder and label name: family, knob and value (and '-pure')."""
        knob = {"two-stage": "esd", "official": "r", "nested": "r", "interleaved": "lam", "official-full": "r",
                "appc": "r", "constrained": "delta", "sequential": "n", "redistil": "esd"}[self.family]
        return f"{self.family}-{knob}{self.value:g}" + ("-pure" if self.pure else "")

    @property
    def key(self) -> str:
        """``family:value`` as configs name points (pure points are not addressable)."""
        return f"{self.family}:{self.value:g}"


def parse_point(text: str) -> Point:
    """``family:value`` -> Point."""
    fam, _, val = text.partition(":")
    return Point(fam, float(val))


def grid(cfg: ParetoConfig) -> list[Point]:
    """Every point of the sweep: each family's knob grid, and the purity points."""
    pts = [Point("two-stage", n) for n in cfg.esd_grid]
    pts += [Point("official", r) for r in cfg.official_r_grid]
    pts += [Point("interleaved", lam) for lam in cfg.paper_lam_grid]
    pts += [Point("nested", r) for r in cfg.paper_r_grid]
    pts += [Point("official-full", r) for r in cfg.official_full_r_grid]
    pts += [Point("appc", r) for r in cfg.appc_r_grid]
    pts += [Point("constrained", d) for d in cfg.constrained_delta_grid]
    pts += [Point("sequential", n) for n in cfg.sequential_grid]
    pts += [Point("redistil", n) for n in cfg.redistil_grid]
    for p in cfg.purity_points:
        fam, _, val = p.partition(":")
        pts.append(Point(fam, float(val), pure=True))
    return pts


def constraint_gap(run_dir: Path) -> dict:
    """The held-out constraint gap L_ft(theta) - L_ft(vartheta) a bilevel run logged (its vartheta twin), final and
    mean over the run, and the constrained preset's dual state; {} for runs without a twin."""
    from prunefit.utils.io import read_jsonl

    log = run_dir / "log.jsonl"
    if not log.is_file():
        return {}
    rows = read_jsonl(log)
    gaps = [r["val/constraint_gap"] for r in rows if "val/constraint_gap" in r]
    out = {"constraint_gap": {"final": gaps[-1], "mean": float(np.mean(gaps)), "n": len(gaps)}} if gaps else {}
    mus = [r["upper/dual_mu"] for r in rows if "upper/dual_mu" in r]
    if mus:
        out["dual"] = {"final_mu": mus[-1], "max_mu": max(mus),
                       "final_r_eff": [r["upper/r_eff"] for r in rows if "upper/r_eff" in r][-1]}
    return out


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
    t = cfg.table3
    base = dataclasses.replace(t, output_dir=cfg.output_dir, seed=seed,
                               lower_concept_share=0.0 if p.pure else t.lower_concept_share)
    ours = f"ours_{cfg.upper_method}"
    if p.family == "two-stage":
        if p.value == 0:
            return base, "distilled"
        if cfg.upper_method == "advunlearn":
            return dataclasses.replace(base, advunlearn_iterations=int(p.value)), "distilled+advunlearn"
        return dataclasses.replace(base, esd_iterations=int(p.value)), "distilled+esd"
    if p.family == "official":
        return dataclasses.replace(base, bilevel_preset="official", r=p.value, upper_lr=None), ours
    if p.family == "constrained":
        return dataclasses.replace(base, bilevel_preset="constrained", r=cfg.constrained_r_max, upper_lr=None,
                                   upper_train_method="full", dual_delta=p.value), ours
    if p.family == "official-full":
        return dataclasses.replace(base, bilevel_preset="official", r=p.value, upper_lr=None,
                                   upper_train_method="full"), ours
    if p.family == "appc":
        return dataclasses.replace(base, bilevel_preset="appc", r=p.value, upper_lr=None,
                                   upper_every=cfg.appc_every), ours
    if p.family == "sequential":
        op, _ = point_config(cfg, parse_point(cfg.sequential_of), seed)
        return dataclasses.replace(op, lower_concept_share=base.lower_concept_share), "sequential"
    if p.family == "redistil":
        return dataclasses.replace(base, esd_iterations=int(p.value)), "redistil"
    if p.family == "nested":
        return dataclasses.replace(base, bilevel_preset="paper", double_loop="nested", r=p.value,
                                   upper_lr=None), ours
    return dataclasses.replace(base, bilevel_preset="paper", double_loop="interleaved", lam=p.value), ours


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


@dataclass
class PointResult:
    point: Point
    seeds: list[int]
    asr: Interval
    fjd: Interval
    """The quality interval: FJD on the toy world, FID on SD."""
    fidelity: float
    """Toy world: mean fidelity over seeds; SD: NaN (not measured)."""
    balance: dict
    models: list[str] = field(default_factory=list)
    """The trained model of each seed."""
    attacks: dict = field(default_factory=dict)
    """{attack: (mean post-attack ASR, seeds attacked)} over the seeds whose cell carries the attack."""
    side: dict = field(default_factory=dict)
    """Means over seeds of what FJD cannot see: plain-prompt rate, each kept artist's rate, neutral style leak,
    the second FJD set (where the cells carry them)."""
    clip_score: Optional[float] = None
    """SD: mean CLIP score over seeds on the COCO-val captions."""


def side_means(cells: list[dict], side_ref=None) -> dict:
    """The side metrics of a point's cells, averaged over the seeds that carry each."""
    def mean(vals: list) -> float | None:
        vals = [v for v in vals if v is not None and v == v]
        return float(np.mean(vals)) if vals else None

    out = {"neutral_leak": mean([c.get("neutral_leak") for c in cells]),
           "plain_rate": mean([c.get("plain_rate") for c in cells]),
           "constraint_gap": mean([(c.get("constraint_gap") or {}).get("final") for c in cells])}
    kept = sorted({a for c in cells for a in (c.get("kept") or {})})
    out["kept"] = {a: mean([(c.get("kept") or {}).get(a) for c in cells]) for a in kept}
    if side_ref is not None:
        out["side_fjd"] = mean([fjd_statistic([(np.array(c["side_val"]["features"]), side_ref)]) for c in cells
                                if c.get("side_val")])
    return {k: v for k, v in out.items() if v not in (None, {})}


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
        self.report_root = Path(cfg.report_dir or cfg.output_dir)
        self.toy = cfg.table3.toy
        self._judged: dict[str, Judged] = {}
        self._sd: dict[str, SDJudge] = {}
        self._fid_refs: dict[str, FidToReference] = {}
        self._fid_intervals: dict[tuple, Interval] = {}

    def judged(self, concept: str) -> Judged:
        """The judge outcomes of ``concept``'s sets, built once per concept."""
        if concept not in self._judged:
            c = self.cfg
            self._judged[concept] = Judged(c.table3.model, concept, c.table3.eval_prompts, val_set=c.val_set,
                                           val_offset=c.val_offset, side_prompts=c.side_prompts,
                                           side_val_set=c.side_val_set, device=c.table3.device)
        return self._judged[concept]

    def sd_judge(self, concept: str) -> SDJudge:
        """The SD protocol of ``concept`` (built once per concept; each cell generates with its own seed)."""
        if concept not in self._sd:
            t = self.cfg.table3
            self._sd[concept] = SDJudge(t.sd, t.model, concept, kind_of(concept, t.model), t.eval_prompts, self.root,
                                        device=t.device)
        return self._sd[concept]

    def _stage(self, p: Point, seed: int, concept: str, croot: Path) -> CellStage:
        tcfg, row = point_config(self.cfg, p, seed)
        t3 = Table3(tcfg, self.log)
        if row == "distilled":
            spec = t3.distil_spec(concept)
        elif row == "sequential":
            spec = sequential_spec(t3, concept, int(p.value))
        elif row == "redistil":
            spec = redistil_spec(t3, concept, self.cfg.redistil_steps)
        else:
            spec = t3.row_spec(row, concept)
        efile = croot / "cells" / f"{row}-{stage_key(spec)}" / self.eval_name()
        return CellStage(t3, row, spec, efile)

    def eval_name(self) -> str:
        """A judged cell's file: ``eval-<n>.json`` on toy-val from row 0 (the archived cells' name), else with the
        validation set and the first row in the name; on SD ``eval-<n>-sd-<protocol key>.json``."""
        c = self.cfg
        name = f"eval-{c.table3.eval_prompts}"
        if not self.toy:
            return f"{name}-sd-{c.table3.sd.key(c.table3.eval_prompts)}.json"
        if c.val_set != "toy-val":
            name += f"-{c.val_set}"
        if c.val_offset:
            name += f"-from{c.val_offset}"
        return name + ".json"

    def train(self, stage: CellStage, p: Point, seed: int, concept: str, croot: Path) -> tuple[Path, dict]:
        """The (point, seed)'s model, trained where missing, and its bilevel balance (or {})."""
        t3, start = stage.table3, stage.table3.start_expert()
        if stage.row == "sequential":
            out = stage_dir(croot / "cells", "sequential", stage.spec)
            return run_sequential(t3, concept, int(p.value), croot / "cells", start, out), {}
        if stage.row == "redistil":
            out = stage_dir(croot / "cells", "redistil", stage.spec)
            return run_redistil(t3, concept, self.cfg.redistil_steps, croot / "cells", start, out), {}
        return t3.run_row(stage.row, concept, croot / "cells", start)

    def compute(self, stage: CellStage, p: Point, seed: int, concept: str, croot: Path) -> dict:
        """Train and judge one (point, seed); the judged cell is kept in ``eval-<n>.json``."""
        row, efile = stage.row, stage.eval_file
        stage_dir(croot / "cells", row, stage.spec)  # the cell's folder, with its spec.json
        self.log(f"[pareto] {concept}: {p.name}, seed {seed}")
        t0 = time.time()
        model, balance = self.train(stage, p, seed, concept, croot)
        res = {"point": p.name, "seed": seed, "model": str(model), "balance": balance,
               "train_seconds": round(time.time() - t0, 1), "threads": self.cfg.table3.threads,
               **constraint_gap(Path(model).parent), **self.measure(Path(model), concept, seed, efile.parent)}
        mark_done(efile, res)  # the judged cell: its presence gates reuse
        return res

    def measure(self, model: Path, concept: str, seed: int, folder: Path) -> dict:
        """A trained cell's judged outcomes: the toy judge's (per-prompt 'shown' and ``asr``, toy-val features and
        fidelity), or on SD the paper's protocol generated with the cell's seed into ``folder`` (per-prompt
        'shown' and ``asr``, FID with the file of its features, CLIP score)."""
        if self.toy:
            return self.judged(concept).measure(model)
        res = self.sd_judge(concept).measure(model, folder, seed)
        return {**res, "asr": res["asr_adversarial"]}

    def side_cell(self, cell: dict, efile: Path, concept: str) -> bool:
        """Add the side metrics (plain-prompt rate, kept artists, second FJD set) a judged cell lacks, on its trained
        model (a cell restored without its model is left as it is); True if they were added."""
        c = self.cfg
        want = (c.side_prompts and cell.get("side_prompts") != c.side_prompts) or (
            c.side_val_set and (cell.get("side_val") or {}).get("set") != c.side_val_set)
        if not want or not cell.get("model") or not Path(cell["model"]).exists():
            return False
        cell.update(self.judged(concept).measure_side(Path(cell["model"])))
        mark_done(efile, cell)
        return True

    def attack_cell(self, cell: dict, efile: Path, seed: int, concept: str) -> bool:
        """Run the configured attacks a judged cell lacks, on its trained model (cells restored without their
        model, e.g. from docs/results, are left unattacked); True if any ran."""
        t = self.cfg.table3
        if not t.attacks or not cell.get("model") or not Path(cell["model"]).exists():
            return False
        prompts, fmt = (None, "auto") if self.toy else t.sd.attack_source()  # SD: sd.attack_prompts
        ran = add_attacks(cell, model=cell["model"], base_model=t.model, concept=concept, attacks=t.attacks,
                          budgets=t.attack_budgets, n_prompts=t.attack_prompts, seed=seed, folder=efile.parent,
                          device=t.device, log=self.log, prompts=prompts, prompt_format=fmt)
        if ran:
            mark_done(efile, cell)
        return ran

    def summarize(self, p: Point, cells: list[dict], concept: str) -> PointResult:
        """One point over its seeds' cells: ASR and FJD (SD: FID) intervals, mean fidelity (SD: CLIP score) and
        attack rates."""
        if not self.toy:
            return self.summarize_sd(p, cells)
        ref = self.judged(concept).ref_features
        asr = bootstrap_interval([np.array(c["shown"], dtype=float) for c in cells], n_boot=self.cfg.n_boot)
        fjd = bootstrap_interval([(np.array(c["features"]), ref) for c in cells], statistic=fjd_statistic,
                                 n_boot=max(50, self.cfg.n_boot // 5), method="centred")
        fidelity = float(np.mean([c["fidelity"] for c in cells]))
        attacked = {a: [c["attacks"][a]["asr"] for c in cells if a in c.get("attacks", {})]
                    for a in self.cfg.table3.attacks}
        judged = self.judged(concept)
        return PointResult(p, [c["seed"] for c in cells], asr, fjd, fidelity, cells[0].get("balance") or {},
                           [c["model"] for c in cells],
                           {a: (float(np.mean(v)), len(v)) for a, v in attacked.items() if v},
                           side_means(cells, judged.side_ref))

    def summarize_sd(self, p: Point, cells: list[dict]) -> PointResult:
        """One point's SD cells: the ASR interval over seeds and prompts (NudeNet / artist flags), the FID interval
        (each seed's generated features resampled against the fixed reference statistics; kept per point and
        seeds, since each draw costs a D x D eigendecomposition), mean CLIP score and attack rates."""
        asr = bootstrap_interval([np.array(c["shown"], dtype=float) for c in cells], n_boot=self.cfg.n_boot)
        key = (p, tuple(c["seed"] for c in cells), tuple(c["fid_features"] for c in cells), self.cfg.n_boot)
        if key not in self._fid_intervals:
            self._fid_intervals[key] = bootstrap_interval(
                [read_features(c["fid_features"]) for c in cells], statistic=self.fid_reference(cells),
                n_boot=max(50, self.cfg.n_boot // 5), method="centred")
        attacked = {a: [c["attacks"][a]["asr"] for c in cells if a in c.get("attacks", {})]
                    for a in self.cfg.table3.attacks}
        return PointResult(p, [c["seed"] for c in cells], asr, self._fid_intervals[key], float("nan"),
                           cells[0].get("balance") or {}, [c["model"] for c in cells],
                           {a: (float(np.mean(v)), len(v)) for a, v in attacked.items() if v}, side_means(cells),
                           float(np.mean([c["clip_score"] for c in cells])))

    def fid_reference(self, cells: list[dict]) -> FidToReference:
        """The FID statistic against the reference statistics the cells were judged with (one protocol: one file)."""
        files = {c["fid_stats"] for c in cells}
        if len(files) != 1:
            raise DataError(f"cells of one point were judged against different FID reference statistics "
                            f"{sorted(files)}; judge them again under one protocol (remove the stale eval-*.json)")
        path = files.pop()
        if path not in self._fid_refs:
            self._fid_refs[path] = FidToReference.from_file(path)
        return self._fid_refs[path]

    def run(self) -> dict:
        """Compute (or read) every point and seed of every concept, attack them and write the reports; returns each
        concept's report summary."""
        torch.set_num_threads(self.cfg.table3.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.toy and not self.cfg.report_only:  # SD: prompt files, COCO and NudeNet before any training
            for concept in self.cfg.table3.concepts:
                self.sd_judge(concept).check()
            for concept in self.cfg.table3.concepts:
                self.sd_judge(concept).prepare(self.log)
        self.report_root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.report_root)
        out = {}
        for concept in self.cfg.table3.concepts:
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
                fresh = self.side_cell(done, efile, concept) or fresh
                fresh = self.attack_cell(done, efile, seed, concept) or fresh
                cells[p].append(done)
                if fresh:  # the report is refreshed after each new cell, not after each reused one (bootstraps)
                    self.write(concept, croot, {q: v for q, v in cells.items() if v})
            cells = {q: v for q, v in cells.items() if v}
            out[concept] = self.write(concept, croot, cells)
        return out

    def write(self, concept: str, croot: Path, cells: dict) -> dict:
        """Write ``concept``'s Pareto report from its cells (all, and paired over the common seeds)."""
        results = [self.summarize(p, cs, concept) for p, cs in cells.items()]
        judged, common, pending = verdict_cells(cells, self.cfg.seeds)
        paired = [self.summarize(p, [c for c in cs if c["seed"] in common], concept) for p, cs in judged.items()]
        registered = None
        if self.cfg.registered is not None:
            keyed = {p.key: cs for p, cs in cells.items() if not p.pure}
            if self.toy:
                ref = self.judged(concept).ref_features
                registered = registered_decisions(keyed, self.cfg.registered,
                                                  lambda c: fjd_statistic([(np.array(c["features"]), ref)]))
            else:  # each cell's FID as the fid metric measured it
                registered = registered_decisions(keyed, self.cfg.registered, lambda c: float(c["fid"]))
        return write_pareto_report(self.report_root / croot.name, concept, results, self.cfg, paired, common, pending,
                                   registered, inert_lines(cells))


def inert_lines(cells: dict) -> list[str]:
    """For each interleaved point at lambda >= 100: how many (seed, prompt) outcomes differ from the same seed's
    distilled model (the upper term is about k / lambda of the step there, so it does nearly nothing)."""
    base = {c["seed"]: c["shown"] for p, cs in cells.items() if p.family == "two-stage" and p.value == 0
            and not p.pure for c in cs}
    lines = []
    for p, cs in cells.items():
        if p.family != "interleaved" or p.value < 100 or p.pure:
            continue
        pairs = [(c["shown"], base[c["seed"]]) for c in cs if c["seed"] in base]
        if pairs:
            changed = sum(int(a != b) for s, t in pairs for a, b in zip(s, t))
            total = sum(len(s) for s, _ in pairs)
            lines.append(f"{p.name}: {changed} of {total} (seed, prompt) outcomes differ from the distilled model's: "
                         "at lambda >= 100 the distillation term outweighs the upper term in every step, so the "
                         "point is (nearly) the distilled model and tests nothing; it is not counted as evidence")
    return lines


def main(cfg: ParetoConfig, log=print) -> dict:
    """Run the Pareto sweep; returns each concept's report summary."""
    return Pareto(cfg, log).run()
