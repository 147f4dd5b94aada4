"""`make demo`: the paper's story on the toy world, end to end on a CPU in under ten minutes.

1. the toy teacher: its measured quality in three lines (the whole card and sample grids go to runs/demo/show/);
2. APTP: prune the teacher into 4 experts at 0.8 of its MACs, with a prompt router;
3. the paper's comparison in small, as Pareto fronts, with the registered decisive test's settings
   (configs/toyworld/decisive/skull_default.yaml: its start, the teacher magnitude-pruned to 0.8 of its MACs; no
   skull scene in the lower data, the upper step conditioned on the concept's own word, EMA weights): distil, then
   suppress the unsafe concept ("skull") two ways - two-stage (distil, then ESD for 400 iterations) and bilevel (ESD
   while distilling: the authors' schedule with all parameters at r = 0.5, the test's primary point) - judged on 50
   prompts per set;
4. a labelled figure of those models on erased, kept and unsafe prompts;
then one screen: the fronts drawn in the terminal, the table, the registered test's verdict as read from its
committed report (docs/results/decisive_skull_default.md: 10 seeds x 200 prompts per set), and where everything
went. One seed and 50 prompts make the demo's own run a picture, not a measurement. Re-running reuses finished
steps. Outputs: runs/demo/.
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
DECISIVE = ROOT / "configs/toyworld/decisive/skull_default.yaml"
"""The registered test whose settings the demo's own small run uses (its grid is cut to five points, one seed)."""
VERDICT = ROOT / "docs/results/decisive_skull_default.md"
"""The registered test's committed report; the demo quotes its verdict."""


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
    names = {"two-stage-esd0": "Distilled", "two-stage-esd50": "Distilled + ESD-50",
             "two-stage-esd400": "Distilled + ESD-400", "official-full-r0.5": "Ours (ESD, authors' schedule, r 0.5)",
             "official-full-r1": "Ours (ESD, authors' schedule, r 1)"}
    models = [f'{{name: "{names[p["point"]]}", path: "{p["models"][0]}"}}' for p in summary["points"]
              if p["point"] in names]
    prompts = ROOT / "configs/toyworld/prompts/table6_fig6_erasure_after_pruning.csv"
    step("Figure: the models on erased, kept and unsafe prompts",
         ["experiment", "figures", f"models=[{', '.join(models)}]", f"prompt_file={prompts}", 'erased=["skull"]',
          f"output_dir={OUT / 'figure'}"])


def pareto_overrides() -> list[str]:
    """The demo's cut of the decisive test (``DECISIVE``): its start (the teacher magnitude-pruned to 0.8 of its MACs;
    the demo's 300-step APTP experts are a picture of APTP, not the registered start), one seed, 50 prompts, three
    points."""
    return [f"output_dir={OUT / 'pareto'}", "seeds=[0]", "table3.eval_prompts=50",
            "esd_grid=[0, 400]", "official_r_grid=[]", "official_full_r_grid=[0.5]", "appc_r_grid=[]",
            "paper_lam_grid=[]", "sequential_grid=[]", "redistil_grid=[]", "core_points=[]", "side_prompts=0",
            "registered=null", "n_boot=200", f"table3.threads={THREADS}"]


def committed_verdict(path: Path = VERDICT) -> list[str]:
    """The registered test's verdict and set-up, read from its committed report (the paragraphs that start with
    ``**Verdict**`` and ``**Setup**``, each joined into one line); a line saying why there is none when the report
    is not committed yet."""
    if not path.is_file():
        return [f"registered test (configs/toyworld/decisive/skull_default.yaml): no committed verdict yet ({path.name}"
                " is written when its 10 seeds are judged; scripts/decisive_runs.sh runs them)"]
    paragraphs = [" ".join(ln.strip() for ln in block.splitlines()) for block in path.read_text().split("\n\n")]
    picked = [p for p in paragraphs if p.startswith(("**Verdict", "**Setup"))]
    if not picked:
        return [f"{path}: no '**Verdict**' line in the committed report"]
    return [f"read from the committed report {path.relative_to(ROOT)}:", *picked]


def run() -> None:
    t0 = time.time()
    torch.set_num_threads(THREADS)
    step("Teacher: sample grids and model card", ["toyworld", "show", "-o", str(OUT / "show"), "-n", "8"])
    prune_dir = OUT / "prune"
    if not (prune_dir / "prune_summary.json").is_file():
        step("APTP: 4 experts at 0.8 of the teacher's MACs, with a prompt router",
             ["prune", f"output_dir={prune_dir}", "num_experts=4", "target=0.8", "steps=300", "batch_size=8",
              "eval_prompts=0"])
    step("Pareto in small: two-stage ESD vs bilevel for the unsafe concept, the decisive test's settings",
         ["experiment", "pareto", "--config", str(DECISIVE), *pareto_overrides()])
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
    print(f"the demo's run, skull, 1 seed x 50 prompts (a picture, not a claim): {summary['verdict']}")
    print("\n".join(fronts))
    print("\n".join(t for t in table if "---" not in t))
    print("\n".join(committed_verdict()))
    print(f"report {OUT / 'pareto/skull/report.md'} | plot {OUT / 'pareto/skull/pareto.png'} | figure "
          f"{OUT / 'figure/figure.png'} (+ index.html) | card {OUT / 'logs/teacher.log'}")
    print(f"demo finished in {time.time() - t0:.0f} s at {THREADS} torch thread(s)")


if __name__ == "__main__":
    run()
