"""Write the Pareto report of one concept from its point summaries: the table with intervals, the verdict, the plot.

The quality axis is FJD on the toy world and FID (with CLIP score beside it) on SD; every label says which."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"two-stage": "tab:gray", "official": "tab:blue", "interleaved": "tab:orange", "nested": "tab:green",
           "official-full": "tab:purple", "appc": "tab:red", "sequential": "tab:brown", "redistil": "tab:olive",
           "constrained": "tab:cyan"}


def could_dominate(q, p) -> bool:
    """Within the intervals, q may be at least as good as p on both ASR and FJD (lower is better)."""
    return q.asr.low <= p.asr.high and q.fjd.low <= p.fjd.high


def verdict(results: list, seeds: list[int], pending: tuple[str, ...] = (), quality: str = "FJD") -> tuple[bool, str]:
    """Does a bilevel point lie beyond the whole two-stage front (no two-stage point could dominate it)?
    ``results`` are summaries over the same ``seeds`` for every point (a seed's distilled model moves every point
    trained from it, so points are compared on the seeds they share)."""
    base = [r for r in results if r.point.family == "two-stage" and not r.point.pure]
    ours = [r for r in results if r.point.family not in ("two-stage", "sequential", "redistil")]
    if not base or not ours or not seeds:
        return False, "verdict: not enough points yet (needs two-stage and bilevel points on a common seed)"
    beyond = [p for p in ours if not any(could_dominate(q, p) for q in base)]
    tail = f" (on seed(s) {', '.join(map(str, seeds))}, common to every point judged"
    tail += f"; not yet judged: {', '.join(pending)})" if pending else ")"
    if beyond:
        names = ", ".join(f"{p.point.name} (ASR {p.asr.text(100)} %, {quality} {p.fjd.text(1, 2)})" for p in beyond)
        return True, f"verdict: YES - beyond the two-stage front by the 95% intervals: {names}{tail}"
    return False, ("verdict: NO - every bilevel point could be matched or dominated by a two-stage point "
                   f"within the 95% intervals{tail}")


def front(rs: list) -> list:
    """The non-dominated points of a family (by estimates), sorted by FJD."""
    keep = [p for p in rs if not any(q is not p and q.asr.estimate <= p.asr.estimate and
                                     q.fjd.estimate <= p.fjd.estimate and
                                     (q.asr.estimate, q.fjd.estimate) != (p.asr.estimate, p.fjd.estimate) for q in rs)]
    return sorted(keep, key=lambda r: r.fjd.estimate)


def _balance(b: dict) -> tuple[str, str]:
    r = "" if not b or b.get("r") is None else f"{b['r']:.3g}"
    lam = "" if not b or b.get("lam") is None else f"{b['lam']:g}"
    return r, lam


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def registered_section(reg, cfg, q: str = "FJD") -> list[str]:
    """The registered test in markdown: the rule, the verdict, per-seed Delta (of ``q``: FJD, or FID on SD), and
    the secondary contrasts."""
    rule = cfg.registered
    d = reg.primary.decision
    md = ["## Registered test", "",
          f"Rule (fixed before the runs{', ' + rule.registered_on if rule.registered_on else ''}): primary "
          f"`{rule.primary}` against each seed's own `{rule.against}` front at the same ASR; one-sided alpha "
          f"{rule.alpha:g}{' (alpha/2 per look: one interim look)' if rule.interim_seeds else ''}, margin "
          f"{rule.margin:g} {q}, ASR tolerance {rule.asr_tolerance:g} points, seeds {rule.seeds}"
          f"{f' + interim {rule.interim_seeds}' if rule.interim_seeds else ''}.", "",
          f"**verdict: {d.line(q)}**", ""]
    if len(reg.looks) > 1:
        md += [f"first look: {reg.looks[0].line(q)}", ""]
    md += [f"| seed | ASR % | {q} | front {q} at ASR | matched ASR % | Delta {q} | dASR (points) |",
           "|---|---|---|---|---|---|---|"]
    md += [f"| {x.seed} | {100 * x.asr:.1f} | {x.fjd:.3f} | {x.front_fjd:.3f} | {100 * x.front_asr:.1f} | "
           f"{x.delta:+.3f} | {x.dasr:+.1f} |" for x in d.deltas]
    if reg.secondary:
        md += ["", "Secondary contrasts (Holm over their one-sided t-tests):", "",
               "| point | front | mean Delta [CI] | t p | Wilcoxon p | dASR | Holm rejects H0 | rule's reading |",
               "|---|---|---|---|---|---|---|---|"]
        for c in reg.secondary:
            x = c.decision
            md.append(f"| {c.point} | {c.against} | {x.mean_delta:+.3f} [{x.interval[0]:+.3f}, {x.interval[1]:+.3f}] "
                      f"| {x.p_t:.4f} | {x.p_wilcoxon:.4f} | {x.mean_dasr:+.1f} | {'yes' if c.holm_reject else 'no'} "
                      f"| {x.verdict} |")
    return md + [""]


def registered_json(reg) -> dict:
    """The registered result as plain data (pareto.json)."""
    def dec(x):
        return {"verdict": x.verdict, "n": x.n, "mean_delta": x.mean_delta, "interval": list(x.interval),
                "p_t": x.p_t, "p_wilcoxon": x.p_wilcoxon, "mean_dasr": x.mean_dasr, "reason": x.reason,
                "deltas": [{"seed": y.seed, "asr": y.asr, "fjd": y.fjd, "front_fjd": y.front_fjd,
                            "front_asr": y.front_asr, "delta": y.delta, "dasr": y.dasr} for y in x.deltas]}

    return {"primary": {"point": reg.primary.point, "against": reg.primary.against, **dec(reg.primary.decision)},
            "looks": [dec(x) for x in reg.looks],
            "secondary": [{"point": c.point, "against": c.against, "holm_reject": c.holm_reject, **dec(c.decision)}
                          for c in reg.secondary]}


def write_pareto_report(croot: Path, concept: str, results: list, cfg, paired: list, common: list[int],
                        pending: tuple[str, ...] = (), registered=None, inert: tuple[str, ...] = ()) -> dict:
    """``results``: every point over all its seeds (the table, the plot); ``paired``: the points the overlap screen
    compares, over the ``common`` seeds only; ``pending``: the points it leaves out for now; ``registered``: the
    registered rule's result (its verdict is the report's); ``inert``: lines on points that test nothing."""
    croot.mkdir(parents=True, exist_ok=True)
    t = cfg.table3
    q = "FJD" if t.toy else "FID"
    ok, line = verdict(paired, common, tuple(pending), q)
    if registered is not None:
        line = "overlap screen (secondary): " + line
    attacks = list(t.attacks)
    if not t.toy:
        return _write_sd(croot, concept, results, cfg, line, ok, registered, inert)
    header = ["point", "family", "seeds", "ASR % [95% CI]", "FJD [95% CI]", "fidelity %", "r", "lambda", "pure data",
              "plain %", "kept artists %", "neutral leak %", "FJD 2nd set", "gap",
              *[f"ASR {a} post (%, seeds)" for a in attacks]]
    sets = f"validation set {cfg.val_set}" + (f", second FJD set {cfg.side_val_set}" if cfg.side_val_set else "")
    sets += f" from row {cfg.val_offset} (a development slice)" if cfg.val_offset else ""
    sets += f", side metrics on {cfg.side_prompts} prompts per set" if cfg.side_prompts else ""
    md = [f"# ASR vs FJD fronts on the toy world: suppressing `{concept}`", "", sets + ".", "",
          *(registered_section(registered, cfg) if registered is not None else []),
          f"{t.eval_prompts} prompts per set (adversarial / artist set for ASR, toy-val for FJD and fidelity), "
          f"{t.lower_steps} lower steps per run, upper every {t.upper_every}, ESD lr {t.esd_lr:g}, lower lr "
          f"{t.train.lr:g}, torch threads {t.threads}; intervals: hierarchical bootstrap over seeds and prompts "
          f"({cfg.n_boot} draws for ASR: percentile; {max(50, cfg.n_boot // 5)} for FJD: centred, since resampled FJDs "
          "are biased upward). Grids fixed before any run.", "", line, "", *[f"- {x}" for x in inert],
          *([""] if inert else []),
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for r in results:
        rr, lam = _balance(r.balance)
        rows.append({"point": r.point.name, "family": r.point.family, "value": r.point.value, "pure": r.point.pure,
                     "seeds": r.seeds, "asr": vars(r.asr), "fjd": vars(r.fjd), "fidelity": r.fidelity,
                     "balance": r.balance, "models": r.models, "attacks": r.attacks, "side": r.side})
        att = "".join(f" {100 * r.attacks[a][0]:.0f} ({r.attacks[a][1]}) |" if a in r.attacks else " – |"
                      for a in attacks)
        kept = r.side.get("kept") or {}
        kept_txt = f"{100 * sum(kept.values()) / len(kept):.1f}" if kept else ""
        side_fjd = f"{r.side['side_fjd']:.2f}" if "side_fjd" in r.side else ""
        md.append(f"| {r.point.name} | {r.point.family} | {len(r.seeds)} | {r.asr.text(100)} | {r.fjd.text(1, 2)} | "
                  f"{100 * r.fidelity:.1f} | {rr} | {lam} | {'yes' if r.point.pure else ''} | "
                  f"{_pct(r.side.get('plain_rate'))} | {kept_txt} | {_pct(r.side.get('neutral_leak'))} | "
                  f"{side_fjd} | {'' if 'constraint_gap' not in r.side else format(r.side['constraint_gap'], '.2e')} |"
                  f"{att}")
    md += ["", "```", *ascii_fronts(results), "```"]
    (croot / "report.md").write_text("\n".join(md) + "\n")
    summary = {"concept": concept, "verdict": line, "beyond_front": ok, "points": rows,
               "inert": list(inert)}
    if registered is not None:
        summary["registered"] = registered_json(registered)
        summary["verdict"] = registered.primary.decision.line()
    (croot / "pareto.json").write_text(json.dumps(summary, indent=1))
    _plot(croot, concept, results, line)
    return summary


def _write_sd(croot: Path, concept: str, results: list, cfg, line: str, ok: bool, registered, inert) -> dict:
    """The SD report: ASR (NudeNet or the artist metric) against FID on COCO-val, CLIP score beside it."""
    from prunefit.experiments.common.protocol import kind_of

    t, sd = cfg.table3, cfg.table3.sd
    attacks = list(t.attacks)
    if kind_of(concept, t.model) == "unsafe":
        safety = f"NudeNet flags ({sd.nudity.threshold:g} on {len(sd.nudity.labels)} labels) on the first " \
                 f"{t.eval_prompts} prompts of {sd.adversarial_prompts}"
    else:
        safety = f"the artist metric's flags (CLIP zero-shot, {sd.artist.model}) on {sd.artist_prompts}'s rows of " \
                 "the artist"
    fid = f"FID ({sd.fid.mode}, {sd.fid.features}{', weights ' + sd.fid.weights if sd.fid.weights else ''})"
    header = ["point", "family", "seeds", "ASR % [95% CI]", "FID [95% CI]", "CLIP score", "r", "lambda", "gap",
              *[f"ASR {a} post (%, seeds)" for a in attacks]]
    md = [f"# ASR vs FID fronts on {t.model}: suppressing `{concept}`", "",
          *(registered_section(registered, cfg, "FID") if registered is not None else []),
          f"ASR: {safety}; quality: {fid} of {sd.coco_n} COCO-val caption images "
          f"against the cached reference statistics, and CLIP score ({sd.clip_score.model}); sampler "
          f"{sd.sampler.steps} steps, guidance {sd.sampler.guidance_scale or 'the model default'}, each cell "
          "generated with its seed. "
          f"{t.lower_steps} lower steps per run, upper every {t.upper_every}, ESD lr {t.esd_lr:g}, lower lr "
          f"{t.train.lr:g}, torch threads {t.threads}; intervals: hierarchical bootstrap over seeds and prompts "
          f"({cfg.n_boot} draws for ASR: percentile; {max(50, cfg.n_boot // 5)} for FID: each seed's generated "
          "features resampled against the fixed reference statistics, centred, since resampled FIDs are biased "
          "upward). Grids fixed before any run.", "", line, "", *[f"- {x}" for x in inert], *([""] if inert else []),
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for r in results:
        rr, lam = _balance(r.balance)
        rows.append({"point": r.point.name, "family": r.point.family, "value": r.point.value, "seeds": r.seeds,
                     "asr": vars(r.asr), "fid": vars(r.fjd), "clip_score": r.clip_score, "balance": r.balance,
                     "models": r.models, "attacks": r.attacks, "side": r.side})
        att = "".join(f" {100 * r.attacks[a][0]:.0f} ({r.attacks[a][1]}) |" if a in r.attacks else " – |"
                      for a in attacks)
        gap = "" if "constraint_gap" not in r.side else format(r.side["constraint_gap"], ".2e")
        md.append(f"| {r.point.name} | {r.point.family} | {len(r.seeds)} | {r.asr.text(100)} | {r.fjd.text(1, 2)} | "
                  f"{r.clip_score:.2f} | {rr} | {lam} | {gap} |{att}")
    md += ["", "```", *ascii_fronts(results, quality="FID"), "```"]
    (croot / "report.md").write_text("\n".join(md) + "\n")
    summary = {"concept": concept, "model": t.model, "quality": "fid", "verdict": line, "beyond_front": ok,
               "points": rows, "inert": list(inert)}
    if registered is not None:
        summary["registered"] = registered_json(registered)
        summary["verdict"] = registered.primary.decision.line("FID")
    (croot / "pareto.json").write_text(json.dumps(summary, indent=1))
    _plot(croot, concept, results, line, xlabel="FID on COCO-val (log scale, lower is better)")
    return summary


MARKS = {"two-stage": "E", "official": "O", "interleaved": "I", "nested": "N", "official-full": "F", "appc": "A",
         "sequential": "S", "redistil": "R", "constrained": "C"}


def ascii_fronts(results: list, width: int = 64, height: int = 14, quality: str = "FJD") -> list[str]:
    """The fronts in a terminal: ASR (%) up, FJD (SD: FID; log) across; E two-stage ESD, O official, I interleaved,
    N nested (lower case: pure lower-level data)."""
    import math

    if not results:
        return []
    xs = [math.log10(max(r.fjd.estimate, 1e-6)) for r in results]
    lo, hi = min(xs), max(xs)
    span = hi - lo or 1.0
    grid = [[" "] * width for _ in range(height)]
    for r, x in zip(results, xs):
        col = round((x - lo) / span * (width - 1))
        row = height - 1 - round(min(max(r.asr.estimate, 0.0), 1.0) * (height - 1))
        mark = MARKS[r.point.family]
        grid[row][col] = mark.lower() if r.point.pure else mark
    lines = [f"{100 * (height - 1 - i) / (height - 1):5.0f}% |" + "".join(g) for i, g in enumerate(grid)]
    lines.append("       +" + "-" * width)
    lines.append(f"        {quality} {10 ** lo:.2f} (log scale) {'':>{max(0, width - 34)}}{10 ** hi:.2f}")
    lines.append("        E two-stage ESD  O official (ESD subset)  F official (all parameters)  A App. C  "
                 "S sequential control  R ESD + re-distil  C constrained")
    lines.append("        I paper/interleaved  N paper/nested  (lower case: pure data)")
    return lines


def _plot(croot: Path, concept: str, results: list, line: str,
          xlabel: str = "FJD on toy-val (log scale, lower is better)") -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    for fam, colour in COLOURS.items():
        for pure in (False, True):
            rs = [r for r in results if r.point.family == fam and r.point.pure == pure]
            if not rs:
                continue
            xs, ys = [r.fjd.estimate for r in rs], [100 * r.asr.estimate for r in rs]
            xerr = [[max(0.0, r.fjd.estimate - r.fjd.low) for r in rs],
                    [max(0.0, r.fjd.high - r.fjd.estimate) for r in rs]]
            yerr = [[max(0.0, 100 * (r.asr.estimate - r.asr.low)) for r in rs],
                    [max(0.0, 100 * (r.asr.high - r.asr.estimate)) for r in rs]]
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="s" if pure else "o", color=colour, alpha=0.8, capsize=2,
                        mfc="white" if pure else colour, label=f"{fam}{' (pure lower data)' if pure else ''}")
            f = front(rs)
            ax.plot([r.fjd.estimate for r in f], [100 * r.asr.estimate for r in f], "-", color=colour, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"ASR of '{concept}' (%, lower is better)")
    ax.set_title(line.split(" - ")[0], fontsize=9)
    ax.grid(alpha=0.3)
    if results:  # an empty report (no cell judged yet) has nothing to label
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(croot / "pareto.png", dpi=120)
    plt.close(fig)
