"""``prunefit experiment table3``: the paper's Table 3 from one starting expert, on the toy world or SD.

Rows (each a composition of the other recipes, at the same lower-step budget):
  Distilled+ESD, ESD+Distilled (unlearn the dense model -> prune it like the expert -> distil), Distilled+UCE,
  Distilled+CP, Distilled+AdvUnlearn, Ours (ESD), Ours (AdvUnlearn).
The concept's kind (``config.concepts``) sets each method's parameters and guides: nudity -> ESD-u / UCE to
"person", artists -> ESD-x / UCE to "art" (both bilevel rows train the two-stage ESD row's subset).
Every stage lives in a folder named by a hash of the settings it depends on (``<output>/<concept>/<stage>-<hash>/``
with ``spec.json``), so a finished row is reused only when its resolved settings match and a changed setting
computes a new folder beside the old one (nothing is overwritten). ``only=<stage>`` runs one stage (``STAGES``) and
stops, so a scheduler can run the rows as separate jobs (each under ``accelerate launch``) and ``only=report``
tabulates them. Judging: the toy world's judge on the toy world (``common/judging.py``), the paper's protocol on SD
(``common/sd_judging.py``: NudeNet ASR on adversarial prompts or the artist rate, FID and CLIP score on COCO-val).
Outputs: report.md (our table beside the paper's numbers), report.csv, asr_vs_fjd.png (SD: asr_vs_fid.png),
curves.png (lower loss, upper loss, constraint gap of the bilevel rows) and samples.png (rows x adversarial prompts).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import DataConfig, FinetuneConfig
from prunefit.errors import ConfigError
from prunefit.experiments.common.attacks import add_attacks
from prunefit.experiments.common.judging import is_unsafe, judge_model
from prunefit.experiments.common.protocol import EraseKnobs, advunlearn_retain, esd_parameters, kind_of
from prunefit.experiments.common.sd_judging import SDJudge
from prunefit.experiments.common.stages import concept_slug, pruned_once, run_erase, stage_dir
from prunefit.experiments.table3.config import ROW_NAMES, ExperimentConfig
from prunefit.experiments.table3.report import write_table3_report
from prunefit.generation.ranks import current_ranks
from prunefit.recipes import bilevel, finetune
from prunefit.utils.io import mark_done, read_jsonl

ERASE_ROWS = {"distilled+esd": "esd", "distilled+uce": "uce", "distilled+cp": "concept_prune",
              "distilled+advunlearn": "advunlearn"}
"""The two-stage rows that erase the distilled student, and their removal method."""


def attack_reach(run_dir: Path) -> Optional[float]:
    """The largest soft-token perturbation AdvUnlearn's inner attack reached in a run (its log), or None."""
    log = Path(run_dir) / "log.jsonl"
    if not log.is_file():
        return None
    norms = [v for row in read_jsonl(log) for k, v in row.items() if k.endswith("/attack_norm")]
    return max(norms) if norms else None


class Table3:
    def __init__(self, cfg: ExperimentConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)
        self._judges: dict[str, SDJudge] = {}

    # ---------------------------------------------------------------- settings each stage depends on
    def lower_data(self, concept: str) -> DataConfig:
        """The lower-level data, with the erased concept's share set where ``lower_concept_share`` asks."""
        share, data = self.cfg.lower_concept_share, self.cfg.data
        if share is None:
            return data
        if is_unsafe(concept):
            return dataclasses.replace(data, toy_p_unsafe=share)
        if share != 0:
            raise ConfigError(f"lower_concept_share for an artist ({concept}) can only be 0 (left out of the data)")
        return dataclasses.replace(data, toy_exclude_artists=sorted({*data.toy_exclude_artists, concept}))

    def start_spec(self) -> dict:
        """What the starting expert depends on (its stage key)."""
        c = self.cfg
        return {"model": c.model, "expert": c.expert, "target": c.target}

    def distil_spec(self, concept: str) -> dict:
        """What the distilled student of ``concept`` depends on (its stage key)."""
        c = self.cfg
        return {**self.start_spec(), "seed": c.seed, "data": asdict(self.lower_data(concept)), "train": asdict(c.train),
                "loss": asdict(c.loss), "lower_steps": c.lower_steps}

    def erase_knobs(self) -> EraseKnobs:
        """The removal methods' settings of this experiment."""
        return EraseKnobs.of(self.cfg)

    def bilevel_config(self, method: str, concept: str, student: Path, out: Path):
        """The typed ``prunefit bilevel`` config of a bilevel row."""
        from prunefit.config.sections import build
        from prunefit.removal.advunlearn.method import AdvUnlearnConfig
        from prunefit.removal.bilevel.config import BilevelConfig
        from prunefit.removal.esd.method import ESDConfig

        c = self.cfg
        upper_steps = max(1, c.lower_steps // c.upper_every)
        xt, images = c.bilevel_xt_source, {}
        if not c.toy:  # no renders of the concept on SD: real concept images, else ESD's own rollouts
            xt = xt or ("images" if c.concept_images else "model")
            images = {"concept_images": c.concept_images} if c.concept_images else {}
        train = dataclasses.replace(c.train, max_steps=c.lower_steps, val_every=max(10, c.lower_steps // 10),
                                    val_samples=16)
        return build(
            BilevelConfig, model=c.model, student=str(student), output_dir=str(out), seed=c.seed, device=c.device,
            preset=c.bilevel_preset, upper_method=method, concepts=[concept], upper_every=c.upper_every, lam=c.lam,
            double_loop=c.double_loop, upper_lr=c.resolved_upper_lr(), upper_warmup_steps=c.upper_warmup_steps,
            upper_train_method=c.upper_train_method or esd_parameters(concept, c.model),
            upper_xt_source=xt, upper_condition=c.upper_condition, upper_batch_size=c.upper_batch_size,
            track_vartheta=c.track_vartheta, dual_delta=c.dual_delta, dual_rho=c.dual_rho,
            data=self.lower_data(concept), train=train, loss=c.loss,
            esd=ESDConfig(ddim_steps=c.esd_ddim_steps, **images),
            advunlearn=AdvUnlearnConfig(ddim_steps=c.esd_ddim_steps, **advunlearn_retain(c.model),
                                        **images).scaled(upper_steps),
            resume="latest" if (out / "checkpoints").is_dir() else None)

    # ---------------------------------------------------------------- building blocks
    def start_expert(self) -> Path:
        """The starting expert: ``expert`` when given, else the teacher magnitude-pruned to ``target`` of its MACs once
        (reused on reruns)."""
        if self.cfg.expert:  # a folder, or `<prune output>@mac=R`: its expert nearest R of the MACs
            from prunefit.pruning.resolve import expert_by_mac

            return Path(expert_by_mac(self.cfg.expert))
        return pruned_once(self.root / "start", f"[table3] magnitude-pruning the teacher to {self.cfg.target} of "
                           "its MACs", self.log, model=self.cfg.model, method="magnitude", target=self.cfg.target,
                           device=self.cfg.device)

    def train_distilled(self, student: Path, out: Path, data: DataConfig, model: Optional[str] = None) -> Path:
        """Fine-tune (distil) ``student`` for ``lower_steps`` into ``out`` (reused when finished, else resumed)."""
        done = out / "expert"
        if (done / "expert.json").is_file():
            return done
        c = self.cfg
        cfg = FinetuneConfig(model=model or c.model, student=str(student), output_dir=str(out), seed=c.seed,
                             device=c.device, data=data, train=dataclasses.replace(c.train, max_steps=c.lower_steps),
                             loss=c.loss, resume="latest" if (out / "checkpoints").is_dir() else None)
        return finetune.main(cfg).model_path

    def distilled(self, concept: str, croot: Path, start: Path) -> Path:
        """The student distilled from ``start`` on ``concept``'s lower-level data (a cached stage)."""
        spec = self.distil_spec(concept)
        return self.train_distilled(start, stage_dir(croot, "distilled", spec), self.lower_data(concept))

    def erased(self, method: str, concept: str, student: Optional[Path], out: Path,
               model: Optional[str] = None) -> Path:
        """Apply removal ``method`` for ``concept`` to ``model`` (with ``student`` as its UNet when given), into
        ``out``; returns the edited model's path."""
        c = self.cfg
        return run_erase(method, concept, model or c.model, student, out, self.erase_knobs(), c.seed, c.device)

    def bilevel(self, method: str, concept: str, student: Path, out: Path) -> Path:
        """Run bilevel removal from ``student`` into ``out`` (reused when finished); returns the expert's path."""
        if (out / "bilevel_summary.json").is_file():
            return out / "expert"
        return bilevel.main(self.bilevel_config(method, concept, student, out)).model_path

    # ---------------------------------------------------------------- rows
    def row_spec(self, row: str, concept: str) -> dict:
        """Every setting a row's model depends on."""
        spec = {"row": row, "concept": concept, **self.distil_spec(concept)}
        if row.startswith("distilled+") or row == "esd+distilled":
            spec["erase"] = asdict(self.erase_knobs())
        if row.startswith("ours_"):
            b = self.bilevel_config(row.split("_", 1)[1], concept, Path("-"), Path("-"))
            # placement is not a setting: the same row trained on a GPU or the CPU has one key (archived stages
            # that recorded the resolved device are renamed by `scripts/pareto_cells.py rekey`)
            spec["bilevel"] = {**asdict(b), "student": None, "output_dir": None, "resume": None, "device": None,
                               "balance": b.balance()}
        return spec

    def run_row(self, row: str, concept: str, croot: Path, start: Path) -> tuple[Path, dict]:
        """(the row's model, its bilevel balance or {}): trains what is missing."""
        if row == "distilled":
            return self.distilled(concept, croot, start), {}
        rdir = stage_dir(croot, row, self.row_spec(row, concept))
        if row in ERASE_ROWS:
            return self.erased(ERASE_ROWS[row], concept, self.distilled(concept, croot, start), rdir), {}
        if row == "esd+distilled":
            erased_teacher = self.esd_teacher(concept, croot)
            pruned = self.prune_like(start, erased_teacher, rdir / "pruned")
            return self.train_distilled(pruned, rdir, self.lower_data(concept), model=str(erased_teacher)), {}
        method = row.split("_", 1)[1]
        model = self.bilevel(method, concept, start, rdir)
        return model, json.loads((rdir / "bilevel_summary.json").read_text())["balance"]

    def esd_teacher_spec(self, concept: str) -> dict:
        """What the ESD-erased dense teacher of "ESD + Distilled" depends on (its stage key)."""
        return {"model": self.cfg.model, "seed": self.cfg.seed, "concept": concept, "erase": asdict(self.erase_knobs())}

    def esd_teacher(self, concept: str, croot: Path) -> Path:
        """The dense teacher with ``concept`` erased by ESD (the kind's parameters), as a pipeline (a cached stage)."""
        return self.erased("esd", concept, None, stage_dir(croot, "esd_teacher", self.esd_teacher_spec(concept)))

    def prune_like(self, start: Path, teacher_dir: Path, out: Path) -> Path:
        """Apply the starting expert's architecture to another (erased) dense model: load, then slice. Under a
        multi-process launch rank 0 writes it while the others wait."""
        if (out / "expert.json").is_file():
            return out
        from prunefit.models.components import load_components
        from prunefit.pruning.expert import read_expert_info, save_expert
        from prunefit.pruning.materialize import materialize
        from prunefit.pruning.spec import gate_spec

        ranks = current_ranks(self.cfg.device)
        if ranks.main:
            info = read_expert_info(start)
            comps = load_components(str(teacher_dir))
            unet = copy.deepcopy(comps.unet)
            materialize(unet, gate_spec(comps.unet, info.ffn_groups), torch.tensor(info.arch))
            info = copy.deepcopy(info)
            info.source_model = str(teacher_dir)
            save_expert(unet, info, out)
        ranks.barrier()
        return out

    # ---------------------------------------------------------------- evaluation
    def eval_spec(self) -> dict:
        """What a row's evaluation depends on (its cache key): the toy judge's set sizes, or the SD protocol."""
        c = self.cfg
        if c.toy:
            return {"eval_prompts": c.eval_prompts, "kept_artists": c.kept_artists}
        return {"eval_prompts": c.eval_prompts, "sd": c.sd.key(c.eval_prompts)}

    def judge(self, concept: str) -> SDJudge:
        """The SD protocol of ``concept`` (built once per concept)."""
        if concept not in self._judges:
            c = self.cfg
            self._judges[concept] = SDJudge(c.sd, c.model, concept, kind_of(concept, c.model), c.eval_prompts,
                                            self.root, c.seed, c.device)
        return self._judges[concept]

    def check(self) -> None:
        """Before any stage: every concept's evaluation can run (SD: its prompt files, COCO, NudeNet)."""
        if not self.cfg.toy:
            for concept in self.cfg.concepts:
                self.judge(concept).check()

    def evaluate(self, model_path: Path, concept: str, folder: Optional[Path] = None) -> dict:
        """Judge the model at ``model_path`` on ``concept``: the toy judge's rates, kept artists, fidelity and FJD;
        on SD the paper's protocol (generated into ``folder``, default the model's)."""
        c = self.cfg
        if c.toy:
            return judge_model(model_path, c.model, concept, c.eval_prompts, c.kept_artists, c.device)
        return self.judge(concept).measure(model_path, folder or Path(model_path).parent)

    def row_file(self, row: str, concept: str, croot: Path) -> Path:
        """Where ``row``'s judged result lives (its stage folder's row.json)."""
        spec = self.distil_spec(concept) if row == "distilled" else self.row_spec(row, concept)
        return stage_dir(croot, row, spec) / "row.json"

    def row_result(self, row: str, concept: str, croot: Path, start: Path) -> dict:
        """The row's judged result: reused from row.json only when its model and evaluation settings match."""
        rfile = self.row_file(row, concept, croot)
        if rfile.is_file():
            old = json.loads(rfile.read_text())
            if old.get("eval") == self.eval_spec():
                if self.attack_row(old, concept, rfile.parent):
                    mark_done(rfile, old, indent=1)
                return old
        self.log(f"[table3] {concept}: {row}")
        t0 = time.time()
        model, balance = self.run_row(row, concept, croot, start)
        res = {"model": str(model), "train_seconds": round(time.time() - t0, 1), "eval": self.eval_spec(),
               "balance": balance, "threads": self.cfg.threads, **self.evaluate(model, concept, rfile.parent)}
        if "advunlearn" in row:
            from prunefit.removal.advunlearn.method import AdvUnlearnConfig

            res["attack_reach"], res["attack_eps"] = attack_reach(Path(model).parent), AdvUnlearnConfig().attack_eps
        main = current_ranks(self.cfg.device).main
        if main:
            mark_done(rfile, res, indent=1)  # the judged row: its presence gates reuse
        if self.attack_row(res, concept, rfile.parent) and main:
            mark_done(rfile, res, indent=1)
        return res

    def attack_row(self, res: dict, concept: str, folder: Path) -> bool:
        """Run the configured attacks a judged row lacks (``res['attacks']``); True if any ran. SD: from the
        ``sd.attack_prompts`` file (default: the adversarial prompts), judged by the detector of the concept."""
        c = self.cfg
        if not c.attacks:
            return False
        prompts, fmt = (None, "auto") if c.toy else c.sd.attack_source()
        return add_attacks(res, model=res["model"], base_model=c.model, concept=concept, attacks=c.attacks,
                           budgets=c.attack_budgets, n_prompts=c.attack_prompts, seed=c.seed, folder=folder,
                           device=c.device, log=self.log, prompts=prompts, prompt_format=fmt)

    def finished_rows(self, concept: str, croot: Path) -> dict:
        """Every row's judged result from its row.json (``only=report``); refused, naming them, while rows are
        missing."""
        files = {row: self.row_file(row, concept, croot) for row in ["distilled", *self.cfg.rows]}
        rows = {row: json.loads(f.read_text()) for row, f in files.items() if f.is_file()}
        missing = [row for row in files if rows.get(row, {}).get("eval") != self.eval_spec()]
        if missing:
            raise ConfigError(f"{concept}: rows {missing} are not finished under this evaluation protocol; run them "
                              "first (only=<row>), then only=report")
        return rows

    def run_stage(self, stage: str, concept: str, croot: Path, start: Path) -> Optional[dict]:
        """One stage of ``concept`` (``config.STAGES``); a row's judged result, else None."""
        if stage == "prepare":
            if not self.cfg.toy:
                self.judge(concept).prepare(self.log)
            return None
        if stage == "esd_teacher":
            self.esd_teacher(concept, croot)
            return None
        return self.row_result(stage, concept, croot, start)

    def run(self) -> dict:
        """Every row of every concept (or the one stage ``only`` names), with its report, samples and figure;
        returns the judged rows by concept."""
        c = self.cfg
        torch.set_num_threads(c.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        self.check()  # SD: prompt files, COCO and NudeNet before any training
        main = current_ranks(c.device).main
        if main:
            save_resolved_config(c, self.root)
        finished = {concept: self.finished_rows(concept, self.root / concept_slug(concept))
                    for concept in c.concepts} if c.only == "report" else {}  # refused before any work
        start = self.start_expert()
        results: dict = {}
        for concept in c.concepts:
            croot = self.root / concept_slug(concept)
            if c.only not in (None, "report"):
                row = self.run_stage(c.only, concept, croot, start)
                results[concept] = {c.only: row} if row is not None else {}
                self.log(f"[table3] {concept}: stage {c.only} done"
                         + (f" -> {self.row_file(c.only, concept, croot)}" if row is not None else ""))
                continue
            if c.only == "report":
                rows = finished[concept]
            else:
                if not c.toy:
                    self.judge(concept).prepare(self.log)
                rows = {row: self.row_result(row, concept, croot, start) for row in ["distilled", *c.rows]}
            results[concept] = rows
            if main:
                write_table3_report(croot, concept, rows, c, start)
                write_samples(croot, rows, concept, c)
                if c.toy and c.sample_prompts > 0:
                    self.figure(concept, croot, rows)
        return results

    def figure(self, concept: str, croot: Path, rows: dict) -> Path:
        """Every row side by side on the toy analogue of the paper's Fig. 6 prompts (erased artists, the unsafe
        concept, neutral and kept prompts; the erased concept's columns marked): ``<concept>/figure/``."""
        from prunefit.experiments.figures.config import FigureModel
        from prunefit.experiments.figures.run import render_figure
        from prunefit.toyworld.figure_prompts import write_toy_prompt_files

        prompts = {p.stem: p for p in write_toy_prompt_files(croot / "figure" / "prompts")}
        models = [FigureModel(name=ROW_NAMES.get(row, "Distilled"), path=r["model"]) for row, r in rows.items()]
        res = render_figure(models, prompts["table6_fig6_erasure_after_pruning"], croot / "figure",
                            erased=[concept], base_model=self.cfg.model, seed=self.cfg.seed)
        self.log(f"[table3] figure: {res.figure} (page {res.html})")
        return res.figure


def write_samples(croot: Path, rows: dict, concept: str, cfg) -> None:
    """samples.png: rows = methods, columns = the first adversarial (or artist) prompts, same seeds everywhere (SD:
    the images the evaluation generated)."""
    from PIL import Image

    if not cfg.toy:
        return _sd_samples(croot, rows, cfg.sample_prompts)

    from prunefit.config.schema import SamplerConfig
    from prunefit.generation.grid import GridStyle, labelled_grid
    from prunefit.generation.toyworld_quality import generate_rows, read_rows
    from prunefit.models.components import load_components
    from prunefit.pruning.resolve import model_components, resolve_model
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import artist_slug

    name = "unsafe-adversarial" if is_unsafe(concept) else f"artist-{artist_slug(concept)}"
    prompts = read_rows(prompts_dir() / f"{name}.jsonl", cfg.sample_prompts)
    comps = load_components(cfg.model)
    grid_rows = []
    for r in rows.values():
        row_comps = model_components(resolve_model(r["model"], cfg.model), base_components=comps)
        imgs = generate_rows(row_comps, prompts, SamplerConfig(batch_size=len(prompts)))
        grid_rows.append([Image.fromarray(x.permute(1, 2, 0).numpy()) for x in imgs])
    labelled_grid(grid_rows, [ROW_NAMES.get(k, "Distilled") for k in rows], [p["prompt"] for p in prompts],
                  style=GridStyle(cell=96)).save(croot / "samples.png")
    (croot / "samples.json").write_text(json.dumps({"rows": list(rows), "prompts": [p["prompt"] for p in prompts]},
                                                   indent=1))


def _sd_samples(croot: Path, rows: dict, n: int) -> None:
    """samples.png of SD rows from their evaluation's images (the same prompt ids and seeds in every row)."""
    from PIL import Image

    from prunefit.generation.grid import GridStyle, labelled_grid
    from prunefit.generation.manifest import MANIFEST, read_manifest

    runs = {k: Path(r["samples"]) for k, r in rows.items() if r.get("samples")}
    if not runs or n <= 0:
        return
    first = read_manifest(next(iter(runs.values())) / MANIFEST)
    ids = list(first)[:n]
    grid = [[Image.open(run / "images" / f"{i}.png").convert("RGB") for i in ids] for run in runs.values()]
    labelled_grid(grid, [ROW_NAMES.get(k, "Distilled") for k in runs], [first[i]["prompt"][:60] for i in ids],
                  style=GridStyle(cell=128)).save(croot / "samples.png")
    (croot / "samples.json").write_text(json.dumps({"rows": list(runs), "prompts": [first[i]["prompt"] for i in ids]},
                                                   indent=1))


def main(cfg: ExperimentConfig, log=print) -> dict:
    """Run the Table 3 experiment; returns the rows by concept."""
    return Table3(cfg, log).run()

