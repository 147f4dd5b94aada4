"""Write the distillation ablation's report from its judged points: per evaluation set the table with intervals, the
regime's precondition checks (PASS / FAIL), and the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from prunefit.evaluation.intervals import bootstrap_interval
from prunefit.experiments.common.judging import fjd_statistic
from prunefit.experiments.distillation.config import VARIANTS, DistillationConfig


def _row(cfg: DistillationConfig, name: str, variant: str, step: int, cs: list[dict], ref: np.ndarray) -> dict:
    fjd = bootstrap_interval([(np.array(c["features"]), ref) for c in cs], statistic=fjd_statistic,
                             n_boot=cfg.n_boot, method="centred")
    fid = bootstrap_interval([np.array(c["correct"], dtype=float) for c in cs], n_boot=cfg.n_boot)
    return {"set": name, "variant": variant, "weights": VARIANTS.get(variant), "step": step, "seeds": len(cs),
            "fjd": vars(fjd), "fidelity": vars(fid)}


def write_report(root: Path, cfg: DistillationConfig, cells: dict, refs: dict[str, np.ndarray],
                 models: Optional[dict] = None, start: Optional[dict] = None, seconds: Optional[float] = None) -> dict:
    """report.md, distillation.json and curves.png in ``root``. ``cells``: (set, variant, step) -> judged points;
    ``refs``: set -> reference judge features; ``models``: 'teacher' / 'start' -> set -> judged point."""
    order = lambda kv: (cfg.eval_sets.index(kv[0][0]), list(VARIANTS).index(kv[0][1]), kv[0][2])  # noqa: E731
    rows = [_row(cfg, n, v, st, cs, refs[n]) for (n, v, st), cs in sorted(cells.items(), key=order)]
    fixed = [_row(cfg, n, who, 0, [res], refs[n]) for who, per in (models or {}).items() for n, res in per.items()]
    checks = _checks(cfg, rows, fixed) if fixed else []
    md = ["# Distillation ablation on the toy world (the paper's Figs 4-5)", "",
          f"Start: {_start_text(cfg, start)}; {cfg.steps} steps, lr {cfg.train.lr:g}, "
          f"batch {cfg.train.micro_batch_size}, seeds {cfg.seeds}, the first {cfg.eval_prompts} prompts of "
          f"{', '.join(cfg.eval_sets)} (fixed seed per prompt), torch threads {cfg.threads}"
          + (f", wall time {seconds / 60:.1f} min" if seconds is not None else "")
          + "; 95% intervals (hierarchical bootstrap over seeds and prompts).", ""]
    if checks:
        md += ["## Preconditions", "", *[f"- {c['line']}" for c in checks], ""]
    for name in cfg.eval_sets:
        md += [f"## {name}", "", "| model / variant | weights (ddpm / out KD / feat KD) | step | FJD [95% CI] | "
               "fidelity % [95% CI] |", "|---|---|---|---|---|"]
        for r in [r for r in fixed + rows if r["set"] == name]:
            f, d = r["fjd"], r["fidelity"]
            weights = " / ".join(f"{w:g}" for w in r["weights"]) if r["weights"] else "-"
            md.append(f"| {r['variant']} | {weights} | {r['step'] or '-'} | "
                      f"{f['estimate']:.2f} [{f['low']:.2f}, {f['high']:.2f}] | "
                      f"{100 * d['estimate']:.1f} [{100 * d['low']:.1f}, {100 * d['high']:.1f}] |")
        final = [r for r in rows if r["set"] == name and r["step"] == cfg.steps]
        if final:
            best = min(final, key=lambda r: r["fjd"]["estimate"])
            md += ["", f"Lowest FJD at step {cfg.steps}: {best['variant']} ({best['fjd']['estimate']:.2f})."]
        md.append("")
    (root / "report.md").write_text("\n".join(md))
    summary = {"rows": rows, "models": fixed, "checks": checks, "start": start, "seconds": seconds,
               "preconditions_hold": all(c["pass"] for c in checks if c["set"] == cfg.check_set) if checks else None}
    (root / "distillation.json").write_text(json.dumps(summary, indent=1))
    _curves(root, [r for r in rows if r["set"] == cfg.eval_sets[0]], cfg.eval_sets[0])
    return summary


def _start_text(cfg: DistillationConfig, start: Optional[dict]) -> str:
    if cfg.expert:
        what = f"expert {cfg.expert}"
    else:
        what = (f"{'APTP' if cfg.prune_method == 'aptp' else 'magnitude'}-pruned teacher at target {cfg.target:g} of "
                f"its MACs" + (f" ({cfg.prune_steps} router steps, expert 0)" if cfg.prune_method == "aptp" else ""))
    if start and start.get("mac_ratio") is not None:
        what += f", MAC ratio {start['mac_ratio']:.3f}"
    if cfg.predistill_steps:
        what += f", pre-distilled {cfg.predistill_steps} steps (output + feature KD)"
    return what


def _checks(cfg: DistillationConfig, rows: list[dict], fixed: list[dict]) -> list[dict]:
    """Per evaluation set at the last step: the teacher beats DDPM-only by ``min_teacher_gain`` in FJD, and the
    distilled variant beats DDPM-only; the lines on ``check_set`` are the regime's preconditions."""
    out = []
    for name in cfg.eval_sets:
        fjd = {r["variant"]: r["fjd"]["estimate"] for r in rows + fixed if r["set"] == name
               and r["step"] in (0, cfg.steps)}
        if not {"teacher", "ddpm", cfg.distilled_variant} <= set(fjd):
            continue
        tag = "precondition" if name == cfg.check_set else "also"
        gain = fjd["ddpm"] / fjd["teacher"]
        ok = gain >= cfg.min_teacher_gain
        out.append({"set": name, "check": "teacher_vs_ddpm", "pass": ok, "ratio": gain,
                    "line": f"{'PASS' if ok else 'FAIL'} ({tag}, {name}) teacher beats DDPM-only by >= "
                            f"{cfg.min_teacher_gain:g}x: FJD {fjd['teacher']:.3f} vs {fjd['ddpm']:.3f}, "
                            f"ratio {gain:.2f}"})
        d = fjd[cfg.distilled_variant]
        ok = d < fjd["ddpm"]
        out.append({"set": name, "check": "distilled_vs_ddpm", "pass": ok, "ratio": fjd["ddpm"] / d,
                    "line": f"{'PASS' if ok else 'FAIL'} ({tag}, {name}) distillation ({cfg.distilled_variant}) "
                            f"beats DDPM-only: FJD {d:.3f} vs {fjd['ddpm']:.3f}, ratio {fjd['ddpm'] / d:.2f}"})
    return out


def _curves(root: Path, rows: list[dict], name: str) -> None:
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
    axes[0].set(xlabel="fine-tuning steps", ylabel=f"FJD on {name} (lower is better)", yscale="log")
    axes[1].set(xlabel="fine-tuning steps", ylabel="prompt fidelity % (higher is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "curves.png", dpi=120)
    plt.close(fig)
