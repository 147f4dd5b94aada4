"""``prunefit experiment table3``: the paper's Table 3 from one starting expert, on the toy world or SD.

Rows (each a composition of the other recipes, at the same lower-step budget):
  Distilled+ESD, ESD+Distilled (unlearn -> prune -> distil), Distilled+UCE, Distilled+CP,
  Distilled+AdvUnlearn, Ours (ESD), Ours (AdvUnlearn).
Every finished row is kept in ``<output>/<concept>/<row>/row.json`` and reused on re-runs. Outputs:
report.md (our table beside the paper's numbers), report.csv, asr_vs_fjd.png, curves.png (lower loss,
upper loss, constraint gap of the bilevel rows) and samples.png (rows x adversarial prompts).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from prunefit.config.load import load_config, save_resolved_config
from prunefit.config.schema import DataConfig, FinetuneLoss, SamplerConfig, TrainConfig
from prunefit.errors import ConfigError

ALL_ROWS = ("distilled+esd", "esd+distilled", "distilled+uce", "distilled+cp", "distilled+advunlearn",
            "ours_esd", "ours_advunlearn")
ROW_NAMES = {"distilled+esd": "Distilled + ESD", "esd+distilled": "ESD + Distilled", "distilled+uce": "Distilled + UCE",
             "distilled+cp": "Distilled + CP", "distilled+advunlearn": "Distilled + AdvUnlearn",
             "ours_esd": "Ours (ESD)", "ours_advunlearn": "Ours (AdvUnlearn)"}
PAPER_TABLE3 = {"distilled+esd": (62.7, 32.47), "esd+distilled": (59.8, 39.11), "distilled+uce": (67.6, 41.55),
                "distilled+cp": (54.9, 29.56), "distilled+advunlearn": (36.6, 36.17), "ours_esd": (57.0, 26.80),
                "ours_advunlearn": (32.4, 26.91)}
"""The paper's Table 3 (SD 2.1 expert, nudity): ASR of adversarial NSFW prompts (%), FID on COCO-val-2017."""


@dataclass
class ExperimentConfig:
    model: str = "toyworld"
    expert: Optional[str] = None
    """Starting expert; None = a magnitude-pruned expert of the teacher at ``target`` MACs."""
    target: float = 0.8
    output_dir: str = "runs/table3"
    concepts: list[str] = field(default_factory=lambda: ["skull"])
    """One table per concept: 'skull' (the unsafe concept; the paper's nudity) or an artist name."""
    rows: list[str] = field(default_factory=lambda: list(ALL_ROWS))
    lower_steps: int = 400
    """Lower (fine-tuning) steps of every row: the matched budget."""
    seed: int = 0
    device: str = "cpu"
    eval_prompts: int = 100
    sample_prompts: int = 6
    data: DataConfig = field(default_factory=lambda: DataConfig(toy_p_unsafe=0.01, toy_p_artist=0.05))
    """Lower-level (fine-tuning) data. The paper fine-tunes on COCO, where nudity and artist names are rare; the
    toy analogue draws 1% unsafe and 5% artist scenes (the teacher's own mix, 15% / 50%, would have the
    distillation re-teach the concept at every step)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=20, micro_batch_size=8,
                                                                   checkpoint_every=200, log_every=10))
    loss: FinetuneLoss = field(default_factory=FinetuneLoss)
    esd_iterations: int = 100
    """Two-stage ESD iterations; matched to the bilevel upper steps (lower_steps / upper_every), as in the paper
    (1,000 ESD iterations; 20,000 lower steps with an upper step every 20)."""
    esd_lr: float = 1e-4
    esd_ddim_steps: int = 20
    advunlearn_iterations: int = 100
    concept_prune_steps: int = 10
    bilevel_preset: str = "official"
    upper_every: int = 4
    upper_batch_size: int = 1
    """Samples per upper step: ESD's batch (1), so an upper step costs what a two-stage ESD iteration costs."""
    track_vartheta: bool = True
    """Train the L_ft-only twin for the constraint-gap curve (a diagnostic: it doubles the lower-level cost of the
    bilevel rows' train_seconds; benchmarks/bilevel_wall.py times bilevel without it)."""
    upper_lr: float = 5e-4
    """Upper (suppression) LR: 5x the lower LR, the paper's ratio (5e-6 upper vs 1e-6 lower)."""
    upper_warmup_steps: int = 5
    bilevel_xt_source: str = "model"
    """x_t of the upper ESD step: 'model' (the paper: 'a step identical to an ESD step') or 'images' (the
    official code); the upper step trains the same parameters as the two-stage ESD row."""
    kept_artists: int = 2
    """Kept artists whose rate is measured (erasure must not spill over)."""

    def __post_init__(self) -> None:
        bad = [r for r in self.rows if r not in ALL_ROWS]
        if bad:
            raise ConfigError(f"unknown table3 rows {bad}; available: {list(ALL_ROWS)}")
        if self.lower_steps < 1 or self.eval_prompts < 2:
            raise ConfigError("lower_steps must be >= 1 and eval_prompts >= 2")


def _is_unsafe(concept: str) -> bool:
    from prunefit.toyworld.world import UNSAFE_PHRASES

    return concept in UNSAFE_PHRASES or concept == "unsafe"


def concept_slug(concept: str) -> str:
    """A concept's folder name in experiment outputs ("Claude Dots" -> "claude-dots")."""
    return concept.lower().replace(" ", "-").replace("'", "")


def _overrides(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _overrides(v, key + ".")
        elif v is not None:
            out.append(f"{key}={json.dumps(v)}")
    return out


@dataclass
class EraseKnobs:
    """Budgets of the removal methods in an experiment (toy-scale defaults live in the experiment configs)."""

    esd_iterations: int
    esd_lr: float
    esd_ddim_steps: int
    advunlearn_iterations: int
    concept_prune_steps: int


def esd_parameters(concept: str) -> str:
    """ESD's parameter subset for a concept: ESD-u (non-cross-attention) for the unsafe concept, as the ESD
    paper does for nudity; ESD-x (cross-attention) for artists."""
    return "noxattn" if _is_unsafe(concept) else "xattn"


def uce_guide(concept: str, model: str) -> list[str]:
    """UCE's guide concept. SD: the reference's "art" (artists) / "person" (nudity). Toy world: the in-vocabulary
    generic words that play those roles ("painting", "drawing"; an unseen word has an untrained embedding)."""
    if model == "toyworld":
        from prunefit.toyworld.world import UCE_GUIDES

        return [UCE_GUIDES["unsafe" if _is_unsafe(concept) else "artist"]]
    return ["person"] if _is_unsafe(concept) else ["art"]


def uce_preserve(concept: str, model: str, preserve_captions: int = 20) -> list[str]:
    """UCE's preserve set in experiments. Toy world: the five shapes, the kept artists (the reference
    preserves other artists when erasing one) and neutral captions drawn from the training grammar (toy
    captions are short, so their end-of-text rows resemble the concept's); SD: none (set uce.preserve)."""
    if model != "toyworld":
        return []
    import numpy as np

    from prunefit.toyworld.world import KEEP_ARTISTS, SHAPES, caption, sample_scene

    rng = np.random.default_rng([12345, 7])  # training-grammar captions, not an evaluation set
    captions = [caption(sample_scene(rng, p_artist=0.0, p_unsafe=0.0), rng) for _ in range(preserve_captions)]
    return [c for c in (*SHAPES, *KEEP_ARTISTS, *captions) if c != concept]


def run_erase(method: str, concept: str, model: str, student: Optional[Path], out: Path, knobs: EraseKnobs,
              seed: int = 0, device: str = "cpu", train_method: Optional[str] = None) -> Path:
    """``prunefit erase`` of one concept with an experiment's budgets; a finished run is reused, an
    interrupted one resumed. ``train_method`` overrides the ESD / AdvUnlearn parameter subset."""
    done = out / ("expert" if student else "pipeline")
    if (out / "erase_summary.json").is_file():
        return done
    from prunefit.recipes import erase
    from prunefit.removal.config import EraseConfig

    ov = [f"model={json.dumps(model)}", f"seed={seed}", f"device={device}", f"output_dir={out}",
          f"removal.method={method}", f"removal.concepts={json.dumps([concept])}"]
    if student:
        ov.append(f"student={student}")
    params = train_method or esd_parameters(concept)
    ov += {"esd": [f"esd.iterations={knobs.esd_iterations}", f"esd.lr={knobs.esd_lr}",
                   f"esd.ddim_steps={knobs.esd_ddim_steps}", f"esd.train_method={params}"],
           "advunlearn": [f"advunlearn.iterations={knobs.advunlearn_iterations}", f"advunlearn.lr={knobs.esd_lr}",
                          f"advunlearn.ddim_steps={knobs.esd_ddim_steps}", f"advunlearn.train_method={params}"],
           "uce": [f"uce.guides={json.dumps(uce_guide(concept, model))}",
                   f"uce.preserve={json.dumps(uce_preserve(concept, model))}"],
           "concept_prune": [f"concept_prune.steps={knobs.concept_prune_steps}"]
           + (["concept_prune.target_template=\"{thing} that is a " + concept + "\""] if _is_unsafe(concept)
              else [])}[method]
    if (out / "checkpoints").is_dir():
        ov.append("resume=latest")
    return erase.main(load_config(EraseConfig, [], ov)).model_path


def guidance_label(cells) -> str:
    """The guidance scale(s) a set of judged cells was sampled at (recorded by judge_model), e.g. '3.0'."""
    scales = {c.get("guidance_scale") for c in cells} - {None}
    return "/".join(str(x) for x in sorted(scales)) if scales else "unrecorded"


def judge_model(model_path, base_model: str, concept: str, n: int, kept_artists: int) -> dict:
    """Toy-world judge metrics of a model (an expert folder or a pipeline folder) for one concept: the
    concept's rate on plain and adversarial prompts, kept artists' rate, fidelity and FJD on toy-val."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.paths import judge_dir, prompts_dir
    from prunefit.toyworld.prompts import artist_slug
    from prunefit.toyworld.quality import measure_set, read_rows
    from prunefit.toyworld.world import KEEP_ARTISTS

    if str(model_path) == base_model:
        comps = load_components(base_model)
    elif (Path(model_path) / "model_index.json").is_file():
        comps = load_components(str(model_path))
    else:
        comps = load_components(base_model)
        unet, _ = load_expert(model_path, comps.unet.config)
        comps = comps.with_unet(unet)
    judge = load_judge(judge_dir())
    sampler = SamplerConfig(batch_size=50)
    sets = ["toy-val"]
    sets += ["unsafe-adversarial", "unsafe-plain"] if _is_unsafe(concept) else [f"artist-{artist_slug(concept)}"]
    kept = [a for a in KEEP_ARTISTS if a != concept][:kept_artists]
    sets += [f"artist-{artist_slug(a)}" for a in kept]
    m = {s: measure_set(comps, judge, s, read_rows(prompts_dir() / f"{s}.jsonl", n), sampler) for s in sets}
    res = {"fjd": m["toy-val"]["fjd"], "fidelity": m["toy-val"]["fidelity"], "guidance_scale": comps.default_guidance,
           "kept_artist_rate": (sum(m[f"artist-{artist_slug(a)}"]["artist_rate"] for a in kept) / len(kept)
                                if kept else float("nan")),
           "sets": m}
    if _is_unsafe(concept):
        res["asr_adversarial"] = m["unsafe-adversarial"]["unsafe_rate"]
        res["rate_plain"] = m["unsafe-plain"]["unsafe_rate"]
    else:
        res["asr_adversarial"] = m[f"artist-{artist_slug(concept)}"]["artist_rate"]
        res["rate_plain"] = res["asr_adversarial"]
    return res


class Table3:
    def __init__(self, cfg: ExperimentConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)

    # ---------------------------------------------------------------- building blocks
    def _common(self) -> list[str]:
        c = self.cfg
        return [f"model={json.dumps(c.model)}", f"seed={c.seed}", f"device={c.device}",
                *_overrides(asdict(c.data), "data."), *_overrides(asdict(c.loss), "loss.")]

    def _train(self, steps: int) -> list[str]:
        t = asdict(self.cfg.train)
        t["max_steps"] = steps
        return _overrides(t, "train.")

    def start_expert(self) -> Path:
        if self.cfg.expert:
            return Path(self.cfg.expert)
        path = self.root / "start"
        if not (path / "prune_summary.json").is_file():
            from prunefit.config.schema import PruneConfig
            from prunefit.recipes import prune

            self.log(f"[table3] magnitude-pruning the teacher to {self.cfg.target} of its MACs")
            prune.main(load_config(PruneConfig, [], [f"model={json.dumps(self.cfg.model)}", "method=magnitude",
                                                     f"target={self.cfg.target}", f"output_dir={path}",
                                                     "eval_prompts=0", f"device={self.cfg.device}"]))
        return path / "experts" / "expert-0"

    def finetuned(self, student: Path, out: Path, model: Optional[str] = None) -> Path:
        if (out / "expert" / "expert.json").is_file():
            return out / "expert"
        from prunefit.config.schema import FinetuneConfig
        from prunefit.recipes import finetune

        ov = [*self._common(), *self._train(self.cfg.lower_steps), f"student={student}", f"output_dir={out}"]
        if model:
            ov.append(f"model={json.dumps(model)}")
        resume = ["resume=latest"] if (out / "checkpoints").is_dir() else []
        return finetune.main(load_config(FinetuneConfig, [], ov + resume)).model_path

    def erased(self, method: str, concept: str, student: Optional[Path], out: Path,
               model: Optional[str] = None) -> Path:
        c = self.cfg
        knobs = EraseKnobs(c.esd_iterations, c.esd_lr, c.esd_ddim_steps, c.advunlearn_iterations, c.concept_prune_steps)
        return run_erase(method, concept, model or c.model, student, out, knobs, c.seed, c.device)

    def bilevel(self, method: str, concept: str, student: Path, out: Path) -> Path:
        if (out / "bilevel_summary.json").is_file():
            return out / "expert"
        from prunefit.recipes import bilevel
        from prunefit.removal.bilevel import BilevelConfig

        c = self.cfg
        esd_method = esd_parameters(concept)
        ov = [*self._common(), *self._train(c.lower_steps), f"student={student}", f"output_dir={out}",
              f"preset={c.bilevel_preset}", f"upper_method={method}", f"concepts={json.dumps([concept])}",
              f"upper_every={c.upper_every}", f"upper_lr={c.upper_lr}", f"upper_warmup_steps={c.upper_warmup_steps}",
              f"{method}.ddim_steps={c.esd_ddim_steps}", f"upper_train_method={esd_method}",
              f"upper_xt_source={c.bilevel_xt_source}",
              f"upper_batch_size={c.upper_batch_size}", f"track_vartheta={str(c.track_vartheta).lower()}",
              f"train.val_every={max(10, c.lower_steps // 10)}", "train.val_samples=16"]
        if (out / "checkpoints").is_dir():
            ov.append("resume=latest")
        return bilevel.main(load_config(BilevelConfig, [], ov)).model_path

    # ---------------------------------------------------------------- rows
    def run_row(self, row: str, concept: str, croot: Path, start: Path) -> Path:
        rdir = croot / row
        distilled = lambda: self.finetuned(start, croot / "distilled")  # noqa: E731  (shared stage 1)
        if row == "distilled+esd":
            return self.erased("esd", concept, distilled(), rdir)
        if row == "distilled+uce":
            return self.erased("uce", concept, distilled(), rdir)
        if row == "distilled+cp":
            return self.erased("concept_prune", concept, distilled(), rdir)
        if row == "distilled+advunlearn":
            return self.erased("advunlearn", concept, distilled(), rdir)
        if row == "esd+distilled":
            erased_teacher = self.erased("esd", concept, None, croot / "esd_teacher")
            pruned = self._prune_like(start, erased_teacher, rdir / "pruned")
            return self.finetuned(pruned, rdir, model=str(erased_teacher))
        if row == "ours_esd":
            return self.bilevel("esd", concept, start, rdir)
        return self.bilevel("advunlearn", concept, start, rdir)

    def _prune_like(self, start: Path, teacher_dir: Path, out: Path) -> Path:
        """Apply the starting expert's architecture to another (erased) dense model: load, then slice."""
        if (out / "expert.json").is_file():
            return out
        from prunefit.models.components import load_components
        from prunefit.pruning.expert import read_expert_info, save_expert
        from prunefit.pruning.materialize import materialize
        from prunefit.pruning.spec import gate_spec

        info = read_expert_info(start)
        comps = load_components(str(teacher_dir))
        unet = copy.deepcopy(comps.unet)
        materialize(unet, gate_spec(comps.unet, info.ffn_groups), torch.tensor(info.arch))
        info = copy.deepcopy(info)
        info.source_model = str(teacher_dir)
        return save_expert(unet, info, out)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, model_path: Path, concept: str) -> dict:
        return judge_model(model_path, self.cfg.model, concept, self.cfg.eval_prompts, self.cfg.kept_artists)

    def run(self) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.root)
        start = self.start_expert()
        results: dict = {}
        for concept in self.cfg.concepts:
            croot = self.root / concept_slug(concept)
            rows = {}
            for row in ["distilled", *self.cfg.rows]:
                rfile = croot / row / "row.json"
                if rfile.is_file():
                    rows[row] = json.loads(rfile.read_text())
                    continue
                self.log(f"[table3] {concept}: {row}")
                t0 = time.time()
                model = self.finetuned(start, croot / "distilled") if row == "distilled" else \
                    self.run_row(row, concept, croot, start)
                rows[row] = {"model": str(model), "train_seconds": round(time.time() - t0, 1),
                             **self.evaluate(model, concept)}
                rfile.parent.mkdir(parents=True, exist_ok=True)
                rfile.write_text(json.dumps(rows[row], indent=1))
            results[concept] = rows
            from prunefit.evaluation.table3_report import write_table3_report

            write_table3_report(croot, concept, rows, self.cfg, start)
        return results


def main(cfg: ExperimentConfig, log=print) -> dict:
    return Table3(cfg, log).run()
