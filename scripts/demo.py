"""`make demo`: the paper's story on the toy world, end to end on a CPU in under ten minutes.

1. the toy teacher: its measured quality in three lines (the whole card and sample grids go to runs/demo/show/);
2. APTP: prune the teacher into 4 experts at 0.8 of its MACs, with a prompt router;
3. the paper's comparison in small, as Pareto fronts: distil expert 0, then suppress the unsafe concept
   ("skull") two ways - two-stage (distil, then ESD for 40 or 160 iterations) and bilevel (ESD while distilling:
   the official preset at r = 0.25 and 1.0, the paper preset at lambda = 100) - judge every point on 50 prompts;
4. a labelled figure of those models on erased, kept and unsafe prompts;
then one screen: the fronts drawn in the terminal, the table and where everything went. One seed and 50
prompts make this a picture, not a measurement: `prunefit experiment pareto --config configs/toyworld/pareto.yaml`
is the measurement (3 seeds, 200 prompts, intervals). Re-running reuses finished steps. Outputs: runs/demo/.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from prunefit.cli import main as prunefit

OUT = Path("runs/demo")
THREADS = int(os.environ.get("PRUNEFIT_THREADS", "1"))
"""torch threads of every step (set once here; the Pareto step is given the same); PRUNEFIT_THREADS overrides."""
ROOT = Path(__file__).resolve().parent.parent


def step(title: str, argv: list[str]) -> float:
    """Run one command with its own output kept in ``runs/demo/logs/`` (progress bars stay on stderr)."""
    print(f"=== {title}\n$ prunefit {' '.join(argv)}", flush=True)
    t0 = time.time()
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = prunefit(argv)
    name = title.split(":")[0].lower().replace(" ", "-")
    (OUT / "logs" / f"{name}.log").write_text(log.getvalue())
    if code:
        print(log.getvalue()[-2000:])
        sys.exit(code)
    took = time.time() - t0
    print(f"    done in {took:.0f} s (output: {OUT / 'logs' / f'{name}.log'})", flush=True)
    return took


def teacher_summary() -> str:
    from prunefit.toyworld.paths import assets_dir

    q = json.loads((assets_dir() / "quality.json").read_text())["quality"]
    artists = [v["artist_rate"] for k, v in q.items() if k.startswith("artist-")]
    plain, adversarial = q["unsafe-plain"]["unsafe_rate"], q["unsafe-adversarial"]["unsafe_rate"]
    return (f"teacher (shipped, CFG 3.0, 200 prompts/set): artist shown {100 * min(artists):.0f}-"
            f"{100 * max(artists):.0f}%, skull on plain / adversarial prompts {100 * plain:.0f}"
            f" / {100 * adversarial:.0f}%, toy-val fidelity "
            f"{100 * q['toy-val']['fidelity']:.0f}%, FJD {q['toy-val']['fjd']:.2f}")


def figure(summary: dict) -> None:
    names = {"two-stage-esd0": "Distilled", "two-stage-esd160": "Distilled + ESD",
             "official-r0.25": "Ours (ESD, official r 0.25)", "interleaved-lam100": "Ours (ESD, paper lambda 100)"}
    models = [f'{{name: "{names[p["point"]]}", path: "{p["models"][0]}"}}' for p in summary["points"]
              if p["point"] in names]
    prompts = ROOT / "configs/toyworld/prompts/table6_fig6_erasure_after_pruning.csv"
    step("Figure: the models on erased, kept and unsafe prompts",
         ["experiment", "figures", f"models=[{', '.join(models)}]", f"prompt_file={prompts}", 'erased=["skull"]',
          f"output_dir={OUT / 'figure'}"])


def run() -> None:
    t0 = time.time()
    torch.set_num_threads(THREADS)
    step("Teacher: sample grids and model card", ["toyworld", "show", "-o", str(OUT / "show"), "-n", "8"])
    prune_dir = OUT / "prune"
    if not (prune_dir / "prune_summary.json").is_file():
        step("APTP: 4 experts at 0.8 of the teacher's MACs, with a prompt router",
             ["prune", f"output_dir={prune_dir}", "num_experts=4", "target=0.8", "steps=300", "batch_size=8",
              "eval_prompts=0"])
    step("Pareto in small: two-stage ESD vs bilevel for the unsafe concept",
         ["experiment", "pareto", f"output_dir={OUT / 'pareto'}",
          f"table3.expert={prune_dir / 'experts' / 'expert-0'}", "table3.concepts=[skull]", "seeds=[0]",
          "table3.eval_prompts=50", "table3.lower_steps=160", "table3.upper_every=4",
          "esd_grid=[0, 40, 160]", "official_r_grid=[0.25, 1.0]", "paper_lam_grid=[100]", "paper_r_grid=[]",
          "purity_points=[]", "core_points=[]", "n_boot=200", f"table3.threads={THREADS}"])
    summary = json.loads((OUT / "pareto" / "skull" / "pareto.json").read_text())
    figure(summary)
    prune_summary = json.loads((prune_dir / "prune_summary.json").read_text())
    report = (OUT / "pareto" / "skull" / "report.md").read_text().splitlines()
    table = [line for line in report if line.startswith("|")]
    fronts = report[report.index("```") + 1: len(report) - 1 - report[::-1].index("```")]
    print("\n" + "=" * 100)
    print(teacher_summary())
    ratios = prune_summary.get("mac_ratios") or [e.get("mac_ratio") for e in prune_summary.get("experts", [])]
    print(f"APTP experts' MAC ratios: {', '.join(f'{r:.2f}' for r in ratios if r is not None)}")
    print(f"skull, 1 seed x 50 prompts (a picture, not a claim): {summary['verdict']}")
    print("\n".join(fronts))
    print("\n".join(t for t in table if "---" not in t))
    print(f"report {OUT / 'pareto/skull/report.md'} | plot {OUT / 'pareto/skull/pareto.png'} | figure "
          f"{OUT / 'figure/figure.png'} (+ index.html) | card {OUT / 'logs/teacher.log'}")
    print(f"demo finished in {time.time() - t0:.0f} s at {THREADS} torch thread(s)")


if __name__ == "__main__":
    run()
