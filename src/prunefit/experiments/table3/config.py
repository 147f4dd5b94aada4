"""The Table 3 experiment's config: its rows, the paper's numbers, and every setting a row depends on."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from prunefit.config.schema import DataConfig, FinetuneLoss, TrainConfig
from prunefit.errors import ConfigError
from prunefit.experiments.common.protocol import TOY_ATTACK_BUDGETS
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
        """The upper-level learning rate: ``upper_lr``, else r * upper_every * the lower lr."""
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



Table3Config = ExperimentConfig
"""The same class under the name of its experiment."""
