"""``prunefit experiment distillation``: the paper's ablation of the fine-tuning objective (its Figs 4-5, §C.1.2).

An APTP expert of the toy teacher is fine-tuned with each loss variant for every seed; at every ``eval_every``
steps the student is judged on toy-val (FJD against ground-truth renders, prompt fidelity), so each variant
gives a curve. Variants (DDPM / output KD / feature KD weights): ddpm 1/0/0, output_kd 0/2/0, feature_kd
0/0/0.1, output+feature 0/2/0.1, all 1/2/0.1 (the paper's). Training continues from the previous evaluation
point's checkpoint (the schedule is a pure function of the step, so the chunks equal one run); every judged
point is kept, so a rerun resumes. Intervals: hierarchical bootstrap over seeds and prompts. Outputs:
distillation.json, report.md, curves.png.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import DataConfig, FinetuneConfig, FinetuneLoss, TrainConfig
from prunefit.errors import ConfigError
from prunefit.evaluation.intervals import bootstrap_interval
from prunefit.utils.device import resolve_device, resolve_mixed_precision

VARIANTS = {"ddpm": (1.0, 0.0, 0.0), "output_kd": (0.0, 2.0, 0.0), "feature_kd": (0.0, 0.0, 0.1),
            "output+feature": (0.0, 2.0, 0.1), "all": (1.0, 2.0, 0.1)}
"""Loss weights (ddpm, output_kd, feature_kd) of each ablation variant."""


@dataclass
class DistillationConfig:
    model: str = "toyworld"
    expert: Optional[str] = None
    """The student; None = APTP-prune the teacher (``prune_steps`` router steps, 4 experts at 0.8 MACs), expert 0."""
    prune_steps: int = 300
    output_dir: str = "runs/distillation"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    steps: int = 400
    eval_every: int = 100
    eval_prompts: int = 200
    threads: int = 1
    n_boot: int = 200
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(toy_p_unsafe=0.01, toy_p_artist=0.05))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=20, micro_batch_size=8,
                                                                   log_every=10))
    loss: FinetuneLoss = field(default_factory=FinetuneLoss)
    """Everything but the three weights, which each variant sets."""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.train.mixed_precision = resolve_mixed_precision(self.train.mixed_precision, self.device)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"unknown distillation variants {bad}; available: {list(VARIANTS)}")
        if self.steps < 1 or self.eval_every < 1 or self.eval_prompts < 2 or not self.seeds:
            raise ConfigError("steps and eval_every must be >= 1, eval_prompts >= 2, seeds non-empty")

    def eval_steps(self) -> list[int]:
        return sorted({*range(self.eval_every, self.steps + 1, self.eval_every), self.steps})


class Distillation:
    def __init__(self, cfg: DistillationConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)

    def student(self) -> Path:
        if self.cfg.expert:
            return Path(self.cfg.expert)
        from prunefit.recipes.table3 import pruned_once

        return pruned_once(self.root / "aptp", f"[distillation] APTP-pruning the teacher ({self.cfg.prune_steps} "
                           "router steps)", self.log, model=self.cfg.model, num_experts=4, target=0.8,
                           steps=self.cfg.prune_steps, batch_size=8, device=self.cfg.device)

    def point(self, variant: str, seed: int, step: int, judged) -> dict:
        from prunefit.recipes import finetune

        c = self.cfg
        run = self.root / variant / f"seed-{seed}"
        efile = run / f"eval-{step}-{c.eval_prompts}.json"
        if efile.is_file():
            return json.loads(efile.read_text())
        ddpm, out_kd, feat_kd = VARIANTS[variant]
        cfg = FinetuneConfig(model=c.model, student=str(self.student()), output_dir=str(run), seed=seed,
                             device=c.device, data=c.data,
                             train=dataclasses.replace(c.train, max_steps=step, checkpoint_every=c.eval_every),
                             loss=dataclasses.replace(c.loss, ddpm=ddpm, output_kd=out_kd, feature_kd=feat_kd),
                             resume="latest" if (run / "checkpoints").is_dir() else None)
        self.log(f"[distillation] {variant}, seed {seed}: to step {step}")
        model = finetune.main(cfg).model_path
        res = {"variant": variant, "seed": seed, "step": step, **judged.measure_val(model)}
        efile.write_text(json.dumps(res))
        return res

    def run(self) -> dict:
        from prunefit.recipes.pareto import Judged

        torch.set_num_threads(self.cfg.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.root)
        judged = Judged(self.cfg.model, "skull", self.cfg.eval_prompts)
        cells: dict[tuple[str, int], list[dict]] = {}
        for seed in self.cfg.seeds:
            for variant in self.cfg.variants:
                for step in self.cfg.eval_steps():
                    cells.setdefault((variant, step), []).append(self.point(variant, seed, step, judged))
        return write_report(self.root, self.cfg, cells, judged.ref_features)


def write_report(root: Path, cfg: DistillationConfig, cells: dict, ref: np.ndarray) -> dict:
    from prunefit.recipes.pareto import fjd_statistic

    rows = []
    for (variant, step), cs in sorted(cells.items(), key=lambda kv: (list(VARIANTS).index(kv[0][0]), kv[0][1])):
        fjd = bootstrap_interval([(np.array(c["features"]), ref) for c in cs], statistic=fjd_statistic,
                                 n_boot=cfg.n_boot, method="centred")
        fid = bootstrap_interval([np.array(c["correct"], dtype=float) for c in cs], n_boot=cfg.n_boot)
        rows.append({"variant": variant, "weights": VARIANTS[variant], "step": step, "seeds": len(cs),
                     "fjd": vars(fjd), "fidelity": vars(fid)})
    final = [r for r in rows if r["step"] == cfg.steps]
    md = ["# Distillation ablation on the toy world (the paper's Figs 4-5)", "",
          f"APTP expert of the toy teacher, {cfg.steps} steps, lr {cfg.train.lr:g}, "
          f"batch {cfg.train.micro_batch_size}, "
          f"{len(cfg.seeds)} seed(s), {cfg.eval_prompts} toy-val prompts, torch threads {cfg.threads}; 95% intervals "
          "(hierarchical bootstrap over seeds and prompts).", "",
          "| variant | weights (ddpm / out KD / feat KD) | step | FJD [95% CI] | fidelity % [95% CI] |",
          "|---|---|---|---|---|"]
    for r in rows:
        f, d = r["fjd"], r["fidelity"]
        md.append(f"| {r['variant']} | {' / '.join(f'{w:g}' for w in r['weights'])} | {r['step']} | "
                  f"{f['estimate']:.2f} [{f['low']:.2f}, {f['high']:.2f}] | "
                  f"{100 * d['estimate']:.1f} [{100 * d['low']:.1f}, {100 * d['high']:.1f}] |")
    if final:
        best = min(final, key=lambda r: r["fjd"]["estimate"])
        md += ["", f"Lowest FJD at step {cfg.steps}: {best['variant']} ({best['fjd']['estimate']:.2f})."]
    (root / "report.md").write_text("\n".join(md) + "\n")
    summary = {"rows": rows}
    (root / "distillation.json").write_text(json.dumps(summary, indent=1))
    _curves(root, rows)
    return summary


def _curves(root: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant in VARIANTS:
        rs = [r for r in rows if r["variant"] == variant]
        if not rs:
            continue
        steps = [r["step"] for r in rs]
        for ax, key, scale in ((axes[0], "fjd", 1), (axes[1], "fidelity", 100)):
            est = [scale * r[key]["estimate"] for r in rs]
            err = [[scale * (r[key]["estimate"] - r[key]["low"]) for r in rs],
                   [scale * (r[key]["high"] - r[key]["estimate"]) for r in rs]]
            ax.errorbar(steps, est, yerr=err, marker="o", capsize=2, label=variant)
    axes[0].set(xlabel="fine-tuning steps", ylabel="FJD on toy-val (lower is better)", yscale="log")
    axes[1].set(xlabel="fine-tuning steps", ylabel="prompt fidelity % (higher is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "curves.png", dpi=120)
    plt.close(fig)


def main(cfg: DistillationConfig, log=print) -> dict:
    return Distillation(cfg, log).run()
