"""Write the distillation ablation's report from its judged points: the table with intervals and the curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prunefit.evaluation.intervals import bootstrap_interval
from prunefit.experiments.common.judging import fjd_statistic
from prunefit.experiments.distillation.config import VARIANTS, DistillationConfig


def write_report(root: Path, cfg: DistillationConfig, cells: dict, ref: np.ndarray) -> dict:
    """report.md, distillation.json and curves.png of ``cells`` ((variant, step) -> judged points) in ``root``."""
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

