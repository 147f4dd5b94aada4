"""Write the Table-3 report of one concept from its judged rows: markdown + CSV, ASR-vs-quality plot, training curves.

The toy world's rows carry the judge's metrics (ASR, FJD, fidelity, kept artists); SD rows the paper's protocol
(NudeNet ASR or the artist rate, FID, CLIP score), each with the protocol it was measured under."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prunefit.experiments.common.attacks import attack_label  # noqa: E402
from prunefit.experiments.common.judging import guidance_label  # noqa: E402
from prunefit.experiments.table3.config import PAPER_TABLE3, ROW_NAMES  # noqa: E402
from prunefit.utils.io import atomic_write_text, read_jsonl  # noqa: E402


def write_table3_report(croot: Path, concept: str, rows: dict, cfg, start: Path) -> Path:
    """report.md, report.csv, the ASR-vs-quality plot and curves.png of ``rows`` (row -> judged result) in
    ``croot``."""
    if not cfg.toy:
        return _write_sd_report(croot, concept, rows, cfg, start)
    header = ["method", "ASR adversarial (%)", "rate plain (%)", "FJD", "fidelity (%)", "kept artists (%)",
              "train s", *[f"ASR {a} pre → post (%)" for a in cfg.attacks], "paper ASR (%)", "paper FID"]
    table = []
    for key, r in rows.items():
        paper = PAPER_TABLE3.get(key, ("", ""))
        attacked = [attack_label(r["attacks"][a]) if a in r.get("attacks", {}) else "–" for a in cfg.attacks]
        table.append([ROW_NAMES.get(key, "Distilled (no removal)"), f"{100 * r['asr_adversarial']:.1f}",
                      f"{100 * r['rate_plain']:.1f}", f"{r['fjd']:.3f}", f"{100 * r['fidelity']:.1f}",
                      f"{100 * r['kept_artist_rate']:.1f}", f"{r['train_seconds']:.0f}", *attacked,
                      *map(str, paper)])
    md = [f"# Table 3 on the toy world: suppressing `{concept}`", "",
          f"Starting expert: `{start}`; every row gets {cfg.lower_steps} lower (fine-tuning) steps; "
          f"{cfg.eval_prompts} prompts per evaluation set, PNDM 25 steps, CFG {guidance_label(rows.values())} "
          "(the model's default); metrics by the toy-world judge. "
          + (f"ASR under attack: the first {cfg.attack_prompts} plain prompts of the concept, UnlearnDiffAtk's "
             "definition (pre-attack successes + attack successes on the rest, over N), budgets "
             f"{json.dumps({a: cfg.attack_budgets.get(a, {}) for a in cfg.attacks})}; in brackets the soft "
             "prompt. " if cfg.attacks else "") +
          "ASR = fraction of adversarial prompts (never naming the concept) whose image shows it "
          "(artist concepts: the artist's prompt set). The paper's columns are SD 2.1 nudity numbers "
          "(ASR of adversarial NSFW prompts, FID on COCO-val-2017) for reference only: not comparable.", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in table]
    for key, r in rows.items():
        b = r.get("balance") or {}
        if b:
            r_txt = "n/a (one optimizer; lambda sets the balance)" if b.get("r") is None else f"{b['r']:.3g}"
            md += ["", f"{ROW_NAMES.get(key, key)}: preset {b['preset']}"
                   + (f" ({b['double_loop']})" if b.get("double_loop") else "")
                   + f", r = upper_lr / (upper_every x lower_lr) = {r_txt}, lower lr {b['lower_lr']:g}, upper lr "
                   f"{b['upper_lr'] if b['upper_lr'] is not None else 'n/a'}, upper every {b['upper_every']}, lambda "
                   f"{b['lam'] if b['lam'] is not None else 'n/a'}, batches lower {b['lower_batch']} / upper "
                   f"{b['upper_batch']}."]
        if r.get("attack_reach") is not None:
            md += ["", f"{ROW_NAMES.get(key, key)}: the inner attack's soft-token perturbation reached "
                   f"{r['attack_reach']:.3f} (L_inf; budget eps = {r.get('attack_eps')})."]
    threads = {r.get("threads") for r in rows.values()} - {None}
    md += ["", f"torch threads: {'/'.join(map(str, sorted(threads))) or 'unrecorded'}; one seed ({cfg.seed})."]
    ours = rows.get("ours_esd")
    base = rows.get("distilled+esd")
    if ours and base:
        md += ["", f"Claim check (bilevel ESD vs Distilled + ESD): FJD {ours['fjd']:.3f} vs {base['fjd']:.3f} "
               f"({'lower or equal' if ours['fjd'] <= base['fjd'] else 'HIGHER'}); adversarial ASR "
               f"{100 * ours['asr_adversarial']:.1f}% vs {100 * base['asr_adversarial']:.1f}% "
               f"({'lower or equal' if ours['asr_adversarial'] <= base['asr_adversarial'] else 'HIGHER'})."]
    (croot / "report.md").write_text("\n".join(md) + "\n")
    with (croot / "report.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *table])
    _scatter(croot, rows, concept)
    _curves(croot, rows)
    return croot / "report.md"


def _write_sd_report(croot: Path, concept: str, rows: dict, cfg, start: Path) -> Path:
    """The SD table: the concept's rate on its prompts, FID and CLIP score on COCO-val, the paper's numbers beside."""
    first = next(iter(rows.values()))
    proto, what = first["protocol"], first["safety_metric"]
    rate = "ASR adversarial (%)" if what == "nudity_asr" else "artist rate (%)"
    header = ["method", rate, "FID", "CLIP score", "train s", *[f"ASR {a} pre → post (%)" for a in cfg.attacks],
              "paper ASR (%)", "paper FID"]
    table = []
    for key, r in rows.items():
        paper = PAPER_TABLE3.get(key, ("", "")) if what == "nudity_asr" else ("", "")
        attacked = [attack_label(r["attacks"][a]) if a in r.get("attacks", {}) else "–" for a in cfg.attacks]
        table.append([ROW_NAMES.get(key, "Distilled (no removal)"), f"{100 * r['asr_adversarial']:.1f}",
                      f"{r['fid']:.2f}", f"{r['clip_score']:.2f}", f"{r['train_seconds']:.0f}", *attacked,
                      *map(str, paper)])
    fid, clip, smp = proto["fid"], proto["clip_score"], proto["sampler"]
    random_fid = "random" in str(fid.get("weights"))
    if what == "nudity_asr":
        n = proto["nudity_asr"]
        safety = (f"ASR = fraction of the first {proto['n_adversarial']} prompts of `{cfg.sd.adversarial_prompts}` "
                  f"(format {cfg.sd.prompt_format}) whose image {n['detector']} flags ({len(n['labels'])} labels "
                  f"{'/'.join(n['labels'])} above {n['threshold']})")
    else:
        a = proto["artist"]
        safety = (f"artist rate = CLIP ({a['model']}) zero-shot accuracy towards `{concept}` among {len(a['labels'])} "
                  f"artists on its {a['n']} prompts of `{cfg.sd.artist_prompts}`")
    md = [f"# Table 3 on `{cfg.model}`: suppressing `{concept}`", ""]
    if random_fid:
        md += ["**Random-weight smoke: the FID Inception has random weights (fid.weights=random); every number here "
               "is meaningless, only the plumbing is proven.**", ""]
    md += [f"Starting expert: `{start}`; every row gets {cfg.lower_steps} lower (fine-tuning) steps. {safety}. "
           f"FID ({fid['mode']}, {fid['features']}, weights: {fid['weights']}) of {proto['n_coco']} COCO-2017 val "
           f"captions (one per image) against {fid['n_reference']} reference images; CLIP score ({clip['model']}, "
           f"scale {clip['scale']}, clamp {clip['clamp']}). Sampling: {smp['scheduler']} {smp['steps']} steps, "
           f"guidance {smp['guidance_scale'] if smp['guidance_scale'] is not None else 'the model default'}, "
           f"{cfg.sd.dtype}. "
           + (f"ASR under attack: the first {cfg.attack_prompts} prompts of `{cfg.sd.attack_source()[0]}`, "
              "UnlearnDiffAtk's definition. " if cfg.attacks else "")
           + ("The paper's columns: SD 2.1, MMA-Diffusion prompts, COCO-val-2017 FID." if what == "nudity_asr"
              else "The paper's Table 3 is nudity only."), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in table]
    threads = {r.get("threads") for r in rows.values()} - {None}
    md += ["", f"torch threads: {'/'.join(map(str, sorted(threads))) or 'unrecorded'}; one seed ({cfg.seed})."]
    atomic_write_text(croot / "report.md", "\n".join(md) + "\n")
    with (croot / "report.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *table])
    _scatter(croot, rows, concept, quality="fid")
    _curves(croot, rows)
    return croot / "report.md"


def _scatter(croot: Path, rows: dict, concept: str, quality: str = "fjd") -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, r in rows.items():
        ax.scatter(r[quality], 100 * r["asr_adversarial"], s=60, marker="*" if key.startswith("ours") else "o")
        ax.annotate(ROW_NAMES.get(key, "Distilled"), (r[quality], 100 * r["asr_adversarial"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{quality.upper()} (lower is better)")
    ax.set_ylabel(f"ASR of '{concept}' (%, lower is better)")
    ax.set_title("Suppression vs quality" + (" (toy world)" if quality == "fjd" else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(croot / f"asr_vs_{quality}.png", dpi=120)
    plt.close(fig)


def _curves(croot: Path, rows: dict) -> None:
    series = {}
    for key in ("ours_esd", "ours_advunlearn"):
        log = Path(rows[key]["model"]).parent / "log.jsonl" if key in rows else None
        if log is not None and log.is_file():
            series[key] = read_jsonl(log)
    if not series:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, recs in series.items():
        for ax, field in zip(axes, ("lower/total", "upper/total", "val/constraint_gap")):
            pts = [(r["step"], r[field]) for r in recs if field in r]
            if pts:
                ax.plot(*zip(*pts), label=key)
    for ax, title in zip(axes, ("lower loss (fine-tuning)", "upper loss (unlearning)", "constraint gap L(θ) − L(ϑ)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(croot / "curves.png", dpi=110)
    plt.close(fig)
