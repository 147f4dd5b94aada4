"""The Table 3 experiment's config: its rows, the paper's numbers, and every setting a row depends on."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import DataConfig, FinetuneLoss, TrainConfig
from prunefit.errors import ConfigError
from prunefit.experiments.common.protocol import TOY_ATTACK_BUDGETS, kind_of
from prunefit.experiments.common.sd_judging import SDJudgingConfig
from prunefit.utils.device import resolve_device, resolve_mixed_precision

ALL_ROWS = ("distilled+esd", "esd+distilled", "distilled+uce", "distilled+cp", "distilled+advunlearn",
            "ours_esd", "ours_advunlearn")


STAGES = ("prepare", "distilled", "esd_teacher", *ALL_ROWS, "report")
"""What ``only`` may name: the evaluation data (SD: COCO captions and FID statistics), the distilled student, the
erased dense teacher of "ESD + Distilled", a row (trained if missing, then judged), or the report of finished rows."""


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
    concepts: Optional[list[str]] = None
    """One table per concept. Toy world: 'skull' (its unsafe concept, the paper's nudity) or a toy artist; SD:
    'nudity' or an artist's name. None = ['skull'] on the toy world, ['nudity'] on SD."""
    rows: list[str] = field(default_factory=lambda: list(ALL_ROWS))
    lower_steps: int = 400
    """Lower (fine-tuning) steps of every row: the matched budget."""
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    eval_prompts: int = 100
    """Prompts per evaluation set (SD: the first N adversarial prompts; the paper: MMA-Diffusion's 1,000)."""
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
    """x_t of the upper step: model (ESD's own rollout) or images (the official code); None = the preset's on the
    toy world; on SD images when ``concept_images`` is given, else model (App. C: "a step identical to an ESD
    step")."""
    concept_images: Optional[str] = None
    """SD: an image-caption folder of the concept (the official code's concept data) for the bilevel upper step's
    x_t (bilevel_xt_source=images); the toy world renders its concepts."""
    upper_condition: Optional[str] = None
    """caption or concept; None = the preset's (official with images: each image's caption)."""
    track_vartheta: bool = True
    """Train the L_ft-only twin for the constraint-gap curve (a diagnostic: it doubles the lower-level cost of the
    bilevel rows' train_seconds; benchmarks/bilevel_wall.py times bilevel without it)."""
    dual_delta: float = 0.05
    """bilevel_preset=constrained: the allowed distillation gap as a fraction of L_ft(vartheta) (bilevel/dual.py)."""
    dual_rho: float = 0.5
    """bilevel_preset=constrained: the dual ascent step."""
    lower_concept_share: Optional[float] = None
    """Share of the erased concept in the lower-level data; None = ``data`` as given. The unsafe concept: any
    value in [0, 1] (data.toy_p_unsafe); an artist: 0 (the artist is left out of the data)."""
    threads: int = 1
    """torch threads of the whole experiment (recorded in the report)."""
    kept_artists: Optional[int] = None
    """Toy world only: kept artists whose rate is measured (erasure must not spill over); None = 2."""
    attacks: list[str] = field(default_factory=list)
    """Attacks run on every row ("ASR under attack" columns; see `prunefit list attacks`); [] = none. Added to
    finished rows on a re-run without retraining them."""
    attack_prompts: int = 16
    """Plain concept prompts attacked per row (the first N of the concept's plain set)."""
    attack_budgets: dict = field(default_factory=lambda: copy.deepcopy(TOY_ATTACK_BUDGETS))
    """Per-attack config overrides (``TOY_ATTACK_BUDGETS``)."""
    sd: SDJudgingConfig = field(default_factory=SDJudgingConfig)
    """How rows are judged on SD (any model but the toy world): nudity ASR on adversarial prompts or the artist
    rate, FID and CLIP score on COCO-2017 val (experiments/common/sd_judging.py)."""
    only: Optional[str] = None
    """Run one stage and stop (a cluster job): prepare, distilled, esd_teacher, a row (trained where missing, then
    judged into its row.json) or report (of the finished rows; refused while one is missing). None = everything."""

    def resolved_upper_lr(self) -> float:
        """The upper-level learning rate: ``upper_lr``, else r * upper_every * the lower lr."""
        return self.upper_lr if self.upper_lr is not None else self.r * self.upper_every * self.train.lr

    @property
    def toy(self) -> bool:
        """Whether the experiment runs on the toy world (judge metrics) rather than SD (the paper's protocol)."""
        return self.model == "toyworld"

    def __post_init__(self) -> None:
        if self.concepts is None:
            self.concepts = ["skull"] if self.toy else ["nudity"]
        if self.toy and self.kept_artists is None:
            self.kept_artists = 2
        if not self.concepts:
            raise ConfigError("concepts must name at least one concept")
        if self.only is not None and self.only not in STAGES:
            raise ConfigError(f"unknown table3 stage only={self.only!r}; available: {list(STAGES)}")
        if not self.toy:
            self._refuse_toy_settings()
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


    def _refuse_toy_settings(self) -> None:
        """SD: a concept or setting only the toy world has is refused before any work."""
        from prunefit.toyworld.erase_defaults import toy_concept_kinds

        toy = [c for c in self.concepts if c in toy_concept_kinds()]
        if toy:
            raise ConfigError(f"concept(s) {toy} belong to the toy world; on {self.model} erase nudity or an artist, "
                              "e.g. concepts=[nudity]")
        for c in self.concepts:
            kind = kind_of(c, self.model)
            if kind not in ("unsafe", "style"):
                raise ConfigError(f"Table 3 on SD measures nudity or an artist; {c!r} is of kind {kind}")
        if self.kept_artists is not None:
            raise ConfigError("kept_artists is a toy-world metric (the judge's artist head); drop it on SD (the "
                              "artist metric's labels are sd.artist.labels)")
        if self.lower_concept_share is not None:
            raise ConfigError("lower_concept_share sets the toy world's data mix; drop it on SD (the concept's share "
                              "is the data's own: data.source=coco)")
        if self.bilevel_xt_source == "images" and not self.concept_images:
            raise ConfigError("bilevel_xt_source=images on SD needs concept_images (an image-caption folder of the "
                              "concept), or drop it for ESD's own rollouts")


Table3Config = ExperimentConfig
"""The same class under the name of its experiment."""
