"""``prunefit experiment table3``: the paper's Table 3 from one starting expert, on the toy world or SD.

Rows (each a composition of the other recipes, at the same lower-step budget):
  Distilled+ESD, ESD+Distilled (unlearn -> prune -> distil), Distilled+UCE, Distilled+CP,
  Distilled+AdvUnlearn, Ours (ESD), Ours (AdvUnlearn).
Every stage lives in a folder named by a hash of the settings it depends on (``<output>/<concept>/<stage>-<hash>/``
with ``spec.json``), so a finished row is reused only when its resolved settings match and a changed setting
computes a new folder beside the old one (nothing is overwritten). Outputs:
report.md (our table beside the paper's numbers), report.csv, asr_vs_fjd.png, curves.png (lower loss,
upper loss, constraint gap of the bilevel rows) and samples.png (rows x adversarial prompts).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import DataConfig, FinetuneLoss, SamplerConfig, TrainConfig
from prunefit.errors import ConfigError
from prunefit.utils.device import resolve_device, resolve_mixed_precision

ALL_ROWS = ("distilled+esd", "esd+distilled", "distilled+uce", "distilled+cp", "distilled+advunlearn",
            "ours_esd", "ours_advunlearn")
ROW_NAMES = {"distilled+esd": "Distilled + ESD", "esd+distilled": "ESD + Distilled", "distilled+uce": "Distilled + UCE",
             "distilled+cp": "Distilled + CP", "distilled+advunlearn": "Distilled + AdvUnlearn",
             "ours_esd": "Ours (ESD)", "ours_advunlearn": "Ours (AdvUnlearn)"}
PAPER_TABLE3 = {"distilled+esd": (62.7, 32.47), "esd+distilled": (59.8, 39.11), "distilled+uce": (67.6, 41.55),
                "distilled+cp": (54.9, 29.56), "distilled+advunlearn": (36.6, 36.17), "ours_esd": (57.0, 26.80),
                "ours_advunlearn": (32.4, 26.91)}
"""The paper's Table 3 (SD 2.1 expert, nudity): ASR of adversarial NSFW prompts (%), FID on COCO-val-2017."""


TOY_ATTACK_BUDGETS = {"unlearndiff": {"iterations": 40}, "ringabell": {"generations": 50, "population": 64},
                      "p4d": {"iterations": 100}}
"""The experiments' toy-scale attack budgets: UnlearnDiffAtk at its paper's 40 iterations; Ring-A-Bell and P4D far
below their 3,000 generations / iterations."""


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
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
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
    r: float = 0.25
    """The unlearning/distillation balance under Adam, r = upper_lr / (upper_every * train.lr); the paper's is
    5e-6 / (20 * 1e-6) = 0.25 (the official code's 0.5). Sets upper_lr unless upper_lr is given."""
    upper_lr: Optional[float] = None
    lam: float = 100.0
    """lambda of the paper preset (weight of L_ft in G_lambda)."""
    double_loop: str = "interleaved"
    """Paper preset: interleaved or nested (removal/bilevel/config.py)."""
    upper_batch_size: Optional[int] = None
    """Samples per upper step; None = the preset's (official: the lower batch; paper: ESD's 1)."""
    upper_warmup_steps: int = 5
    upper_train_method: Optional[str] = None
    """Parameters of the upper step (xattn, noxattn, selfattn, full); None = the two-stage ESD row's (ESD-u for
    the unsafe concept, ESD-x for artists)."""
    bilevel_xt_source: Optional[str] = None
    """x_t of the upper step: model (ESD's own rollout) or images (the official code); None = the preset's."""
    upper_condition: Optional[str] = None
    """caption or concept; None = the preset's (official with images: each image's caption)."""
    track_vartheta: bool = True
    """Train the L_ft-only twin for the constraint-gap curve (a diagnostic: it doubles the lower-level cost of the
    bilevel rows' train_seconds; benchmarks/bilevel_wall.py times bilevel without it)."""
    lower_concept_share: Optional[float] = None
    """Share of the erased concept in the lower-level data; None = ``data`` as given. The unsafe concept: any
    value in [0, 1] (data.toy_p_unsafe); an artist: 0 (the artist is left out of the data)."""
    threads: int = 1
    """torch threads of the whole experiment (recorded in the report)."""
    kept_artists: int = 2
    """Kept artists whose rate is measured (erasure must not spill over)."""
    attacks: list[str] = field(default_factory=list)
    """Attacks run on every row ("ASR under attack" columns; see `prunefit list attacks`); [] = none. Added to
    finished rows on a re-run without retraining them."""
    attack_prompts: int = 16
    """Plain concept prompts attacked per row (the first N of the concept's plain set)."""
    attack_budgets: dict = field(default_factory=lambda: copy.deepcopy(TOY_ATTACK_BUDGETS))
    """Per-attack config overrides (``TOY_ATTACK_BUDGETS``)."""

    def resolved_upper_lr(self) -> float:
        return self.upper_lr if self.upper_lr is not None else self.r * self.upper_every * self.train.lr

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)
        bad = [r for r in self.rows if r not in ALL_ROWS]
        if bad:
            raise ConfigError(f"unknown table3 rows {bad}; available: {list(ALL_ROWS)}")
        if self.lower_steps < 1 or self.eval_prompts < 2:
            raise ConfigError("lower_steps must be >= 1 and eval_prompts >= 2")
        if self.attacks:
            from prunefit.attacks.registry import get_attack

            for a in self.attacks:
                get_attack(a)  # unknown attacks fail before any work
            if self.attack_prompts < 1:
                raise ConfigError("attack_prompts must be >= 1 when attacks are set")
        if self.r <= 0 or self.threads < 1:
            raise ConfigError("r must be > 0 and threads >= 1")
        if self.lower_concept_share is not None and not 0 <= self.lower_concept_share <= 1:
            raise ConfigError(f"lower_concept_share must be in [0, 1], got {self.lower_concept_share}")


def _is_unsafe(concept: str) -> bool:
    from prunefit.toyworld.world import UNSAFE_PHRASES

    return concept in UNSAFE_PHRASES or concept == "unsafe"


def concept_slug(concept: str) -> str:
    """A concept's folder name in experiment outputs ("Claude Dots" -> "claude-dots")."""
    return concept.lower().replace(" ", "-").replace("'", "")


@dataclass
class EraseKnobs:
    """Budgets of the removal methods in an experiment (toy-scale defaults live in the experiment configs)."""

    esd_iterations: int
    esd_lr: float
    esd_ddim_steps: int
    advunlearn_iterations: int
    concept_prune_steps: int

    @classmethod
    def of(cls, cfg) -> "EraseKnobs":
        """The budgets of an experiment config that declares these five keys (Table 3 / Pareto, the erasure
        matrix: each with its own defaults)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


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
    from prunefit.config.sections import build
    from prunefit.recipes import erase
    from prunefit.removal.config import EraseConfig, RemovalSection
    from prunefit.removal.registry import get_method

    section = method_section(get_method(method).config_cls, method, concept, model, knobs, train_method)
    cfg = build(EraseConfig, model=model, student=str(student) if student else None, output_dir=str(out), seed=seed,
                device=device, removal=RemovalSection(method=method, concepts=[concept]), **{method: section},
                resume="latest" if (out / "checkpoints").is_dir() else None)
    return erase.main(cfg).model_path


def pruned_once(out: Path, message: str, log, **settings) -> Path:
    """Expert 0 of a ``prunefit prune`` run into ``out`` with ``settings`` (no evaluation prompts), pruning only
    when ``out`` holds no finished run: an experiment's starting student."""
    if not (out / "prune_summary.json").is_file():
        from prunefit.config.schema import PruneConfig
        from prunefit.recipes import prune

        log(message)
        prune.main(dataclasses.replace(PruneConfig(), output_dir=str(out), eval_prompts=0, **settings))
    return out / "experts" / "expert-0"


def method_section(config_cls: type, method: str, concept: str, model: str, knobs: EraseKnobs,
                   train_method: Optional[str] = None):
    """A method's section with the experiments' toy-scale protocol for the built-in methods (budgets, UCE's
    guides and preserve set, ConceptPrune's unsafe template); any other registered method keeps its defaults."""
    params = train_method or esd_parameters(concept)
    base = config_cls(concepts=[concept])
    if method == "esd":
        return dataclasses.replace(base, iterations=knobs.esd_iterations, lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params)
    if method == "advunlearn":  # the reference's attack schedule (200 warm-up of 1,000, 30 PGD steps) scaled
        return dataclasses.replace(base.scaled(knobs.advunlearn_iterations), lr=knobs.esd_lr,
                                   ddim_steps=knobs.esd_ddim_steps, train_method=params)
    if method == "uce":
        return dataclasses.replace(base, guides=uce_guide(concept, model), preserve=uce_preserve(concept, model))
    if method == "concept_prune":
        template = {"target_template": "{thing} that is a " + concept} if _is_unsafe(concept) else {}
        return dataclasses.replace(base, steps=knobs.concept_prune_steps, **template)
    return base


def attack_reach(run_dir: Path) -> Optional[float]:
    """The largest soft-token perturbation AdvUnlearn's inner attack reached in a run (its log), or None."""
    log = Path(run_dir) / "log.jsonl"
    if not log.is_file():
        return None
    norms = [v for line in log.read_text().splitlines() if line.strip()
             for k, v in json.loads(line).items() if k.endswith("/attack_norm")]
    return max(norms) if norms else None


def guidance_label(cells) -> str:
    """The guidance scale(s) a set of judged cells was sampled at (recorded by judge_model), e.g. '3.0'."""
    scales = {c.get("guidance_scale") for c in cells} - {None}
    return "/".join(str(x) for x in sorted(scales)) if scales else "unrecorded"


def judge_model(model_path, base_model: str, concept: str, n: int, kept_artists: int) -> dict:
    """Toy-world judge metrics of a model (an expert folder or a pipeline folder) for one concept: the
    concept's rate on plain and adversarial prompts, kept artists' rate, fidelity and FJD on toy-val."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert
    from prunefit.recipes.toyworld_quality import measure_set, read_rows
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.paths import judge_dir, prompts_dir
    from prunefit.toyworld.prompts import artist_slug
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


ADDED_SETTINGS = {"esd": {"retain_weight": 0.0, "retain_prompts": [], "retain_xt": "concept"},
                  "train": {"allow_tf32": True, "cudnn_benchmark": True},
                  "data": {"num_workers": 2, "pin_memory": True}}
"""Settings added to a section after stages were archived (docs/results/pareto_cells): at these values, which leave
the method as it was, they stay out of a stage's key, so the archived stages keep their folders."""

UNKEYED_SETTINGS = {"data": ("num_workers", "pin_memory")}
"""Settings that never change a stage's result (the data loader's workers give bit-identical batches: test_data_loader)
and so stay out of its key at any value."""


def _keyed(spec: Any) -> Any:
    """``spec`` without the ``ADDED_SETTINGS`` that are at their neutral values (in sections of those names)."""
    if not isinstance(spec, dict):
        return spec
    out = {}
    for k, v in spec.items():
        v = _keyed(v)
        if k in ADDED_SETTINGS and isinstance(v, dict):
            v = {kk: vv for kk, vv in v.items() if ADDED_SETTINGS[k].get(kk, object()) != vv
                 and kk not in UNKEYED_SETTINGS.get(k, ())}
        out[k] = v
    return out


def stage_key(spec: dict) -> str:
    """A short, stable hash of a stage's resolved settings (its folder name suffix)."""
    return hashlib.sha256(json.dumps(_keyed(spec), sort_keys=True, default=str).encode()).hexdigest()[:10]


def stage_dir(root: Path, name: str, spec: dict) -> Path:
    """``root/<name>-<hash>/`` with the settings in ``spec.json``: a stage is reused only by the same settings."""
    d = root / f"{name}-{stage_key(spec)}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "spec.json").is_file():
        (d / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
    return d


class Table3:
    def __init__(self, cfg: ExperimentConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)

    # ---------------------------------------------------------------- settings each stage depends on
    def lower_data(self, concept: str) -> DataConfig:
        """The lower-level data, with the erased concept's share set where ``lower_concept_share`` asks."""
        share, data = self.cfg.lower_concept_share, self.cfg.data
        if share is None:
            return data
        if _is_unsafe(concept):
            return dataclasses.replace(data, toy_p_unsafe=share)
        if share != 0:
            raise ConfigError(f"lower_concept_share for an artist ({concept}) can only be 0 (left out of the data)")
        return dataclasses.replace(data, toy_exclude_artists=sorted({*data.toy_exclude_artists, concept}))

    def start_spec(self) -> dict:
        c = self.cfg
        return {"model": c.model, "expert": c.expert, "target": c.target}

    def distil_spec(self, concept: str) -> dict:
        c = self.cfg
        return {**self.start_spec(), "seed": c.seed, "data": asdict(self.lower_data(concept)), "train": asdict(c.train),
                "loss": asdict(c.loss), "lower_steps": c.lower_steps}

    def erase_knobs(self) -> EraseKnobs:
        return EraseKnobs.of(self.cfg)

    def bilevel_config(self, method: str, concept: str, student: Path, out: Path):
        """The typed ``prunefit bilevel`` config of a bilevel row."""
        from prunefit.config.sections import build
        from prunefit.removal.advunlearn.method import AdvUnlearnConfig
        from prunefit.removal.bilevel.config import BilevelConfig
        from prunefit.removal.esd.method import ESDConfig

        c = self.cfg
        upper_steps = max(1, c.lower_steps // c.upper_every)
        train = dataclasses.replace(c.train, max_steps=c.lower_steps, val_every=max(10, c.lower_steps // 10),
                                    val_samples=16)
        return build(
            BilevelConfig, model=c.model, student=str(student), output_dir=str(out), seed=c.seed, device=c.device,
            preset=c.bilevel_preset, upper_method=method, concepts=[concept], upper_every=c.upper_every, lam=c.lam,
            double_loop=c.double_loop, upper_lr=c.resolved_upper_lr(), upper_warmup_steps=c.upper_warmup_steps,
            upper_train_method=c.upper_train_method or esd_parameters(concept), upper_xt_source=c.bilevel_xt_source,
            upper_condition=c.upper_condition, upper_batch_size=c.upper_batch_size, track_vartheta=c.track_vartheta,
            data=self.lower_data(concept), train=train, loss=c.loss, esd=ESDConfig(ddim_steps=c.esd_ddim_steps),
            advunlearn=AdvUnlearnConfig(ddim_steps=c.esd_ddim_steps).scaled(upper_steps),
            resume="latest" if (out / "checkpoints").is_dir() else None)

    # ---------------------------------------------------------------- building blocks
    def start_expert(self) -> Path:
        if self.cfg.expert:
            return Path(self.cfg.expert)
        return pruned_once(self.root / "start", f"[table3] magnitude-pruning the teacher to {self.cfg.target} of "
                           "its MACs", self.log, model=self.cfg.model, method="magnitude", target=self.cfg.target,
                           device=self.cfg.device)

    def train_distilled(self, student: Path, out: Path, data: DataConfig, model: Optional[str] = None) -> Path:
        """Fine-tune (distil) ``student`` for ``lower_steps`` into ``out`` (reused when finished, else resumed)."""
        done = out / "expert"
        if (done / "expert.json").is_file():
            return done
        from prunefit.config.schema import FinetuneConfig
        from prunefit.recipes import finetune

        c = self.cfg
        cfg = FinetuneConfig(model=model or c.model, student=str(student), output_dir=str(out), seed=c.seed,
                             device=c.device, data=data, train=dataclasses.replace(c.train, max_steps=c.lower_steps),
                             loss=c.loss, resume="latest" if (out / "checkpoints").is_dir() else None)
        return finetune.main(cfg).model_path

    def distilled(self, concept: str, croot: Path, start: Path) -> Path:
        spec = self.distil_spec(concept)
        return self.train_distilled(start, stage_dir(croot, "distilled", spec), self.lower_data(concept))

    def erased(self, method: str, concept: str, student: Optional[Path], out: Path,
               model: Optional[str] = None) -> Path:
        c = self.cfg
        return run_erase(method, concept, model or c.model, student, out, self.erase_knobs(), c.seed, c.device)

    def bilevel(self, method: str, concept: str, student: Path, out: Path) -> Path:
        if (out / "bilevel_summary.json").is_file():
            return out / "expert"
        from prunefit.recipes import bilevel

        return bilevel.main(self.bilevel_config(method, concept, student, out)).model_path

    # ---------------------------------------------------------------- rows
    def row_spec(self, row: str, concept: str) -> dict:
        """Every setting a row's model depends on."""
        spec = {"row": row, "concept": concept, **self.distil_spec(concept)}
        if row.startswith("distilled+") or row == "esd+distilled":
            spec["erase"] = asdict(self.erase_knobs())
        if row.startswith("ours_"):
            b = self.bilevel_config(row.split("_", 1)[1], concept, Path("-"), Path("-"))
            spec["bilevel"] = {**asdict(b), "student": None, "output_dir": None, "resume": None,
                               "balance": b.balance()}
        return spec

    def run_row(self, row: str, concept: str, croot: Path, start: Path) -> tuple[Path, dict]:
        """(the row's model, its bilevel balance or {}): trains what is missing."""
        if row == "distilled":
            return self.distilled(concept, croot, start), {}
        rdir = stage_dir(croot, row, self.row_spec(row, concept))
        methods = {"distilled+esd": "esd", "distilled+uce": "uce", "distilled+cp": "concept_prune",
                   "distilled+advunlearn": "advunlearn"}
        if row in methods:
            return self.erased(methods[row], concept, self.distilled(concept, croot, start), rdir), {}
        if row == "esd+distilled":
            teacher_spec = {"model": self.cfg.model, "seed": self.cfg.seed, "concept": concept,
                            "erase": asdict(self.erase_knobs())}
            erased_teacher = self.erased("esd", concept, None, stage_dir(croot, "esd_teacher", teacher_spec))
            pruned = self._prune_like(start, erased_teacher, rdir / "pruned")
            return self.train_distilled(pruned, rdir, self.lower_data(concept), model=str(erased_teacher)), {}
        method = row.split("_", 1)[1]
        model = self.bilevel(method, concept, start, rdir)
        return model, json.loads((rdir / "bilevel_summary.json").read_text())["balance"]

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
    def eval_spec(self) -> dict:
        return {"eval_prompts": self.cfg.eval_prompts, "kept_artists": self.cfg.kept_artists}

    def evaluate(self, model_path: Path, concept: str) -> dict:
        return judge_model(model_path, self.cfg.model, concept, self.cfg.eval_prompts, self.cfg.kept_artists)

    def row_result(self, row: str, concept: str, croot: Path, start: Path) -> dict:
        """The row's judged result: reused from row.json only when its model and evaluation settings match."""
        spec = self.distil_spec(concept) if row == "distilled" else self.row_spec(row, concept)
        rfile = stage_dir(croot, row, spec) / "row.json"
        if rfile.is_file():
            old = json.loads(rfile.read_text())
            if old.get("eval") == self.eval_spec():
                if self.attack_row(old, concept, rfile.parent):
                    rfile.write_text(json.dumps(old, indent=1))
                return old
        self.log(f"[table3] {concept}: {row}")
        t0 = time.time()
        model, balance = self.run_row(row, concept, croot, start)
        res = {"model": str(model), "train_seconds": round(time.time() - t0, 1), "eval": self.eval_spec(),
               "balance": balance, "threads": self.cfg.threads, **self.evaluate(model, concept)}
        if "advunlearn" in row:
            from prunefit.removal.advunlearn.method import AdvUnlearnConfig

            res["attack_reach"], res["attack_eps"] = attack_reach(Path(model).parent), AdvUnlearnConfig().attack_eps
        rfile.write_text(json.dumps(res, indent=1))
        if self.attack_row(res, concept, rfile.parent):
            rfile.write_text(json.dumps(res, indent=1))
        return res

    def attack_row(self, res: dict, concept: str, folder: Path) -> bool:
        """Run the configured attacks a judged row lacks (``res['attacks']``); True if any ran."""
        if not self.cfg.attacks:
            return False
        from prunefit.recipes.attack import add_attacks

        return add_attacks(res, model=res["model"], base_model=self.cfg.model, concept=concept,
                           attacks=self.cfg.attacks, budgets=self.cfg.attack_budgets,
                           n_prompts=self.cfg.attack_prompts, seed=self.cfg.seed, folder=folder,
                           device=self.cfg.device, log=self.log)

    def run(self) -> dict:
        torch.set_num_threads(self.cfg.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.root)
        start = self.start_expert()
        results: dict = {}
        for concept in self.cfg.concepts:
            croot = self.root / concept_slug(concept)
            rows = {row: self.row_result(row, concept, croot, start) for row in ["distilled", *self.cfg.rows]}
            results[concept] = rows
            from prunefit.recipes.table3_report import write_table3_report

            write_table3_report(croot, concept, rows, self.cfg, start)
            if self.cfg.model == "toyworld" and self.cfg.sample_prompts > 0:
                self.figure(concept, croot, rows)
        return results

    def figure(self, concept: str, croot: Path, rows: dict) -> Path:
        """Every row side by side on the toy analogue of the paper's Fig. 6 prompts (erased artists, the unsafe
        concept, neutral and kept prompts; the erased concept's columns marked): ``<concept>/figure/``."""
        from prunefit.recipes.figures import FigureModel, render_figure, write_toy_prompt_files

        prompts = {p.stem: p for p in write_toy_prompt_files(croot / "figure" / "prompts")}
        models = [FigureModel(name=ROW_NAMES.get(row, "Distilled"), path=r["model"]) for row, r in rows.items()]
        res = render_figure(models, prompts["table6_fig6_erasure_after_pruning"], croot / "figure",
                            erased=[concept], base_model=self.cfg.model, seed=self.cfg.seed)
        self.log(f"[table3] figure: {res.figure} (page {res.html})")
        return res.figure


def main(cfg: ExperimentConfig, log=print) -> dict:
    return Table3(cfg, log).run()
