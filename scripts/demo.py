"""`make demo`: the paper's story on the toy world, end to end on a CPU in a few minutes.

1. the toy teacher: model card and sample grids;
2. APTP: prune the teacher into 4 experts at 0.8 of its MACs, with a prompt router;
3. Table 3 in small: distil expert 0, then suppress the unsafe concept ("skull") and an artist
   ("Claude Dots") two ways - two-stage (distil, then ESD) and bilevel (ESD while distilling) -
   evaluate every row with the judge, and write reports, plots and sample grids.
Re-running reuses finished steps. Outputs go to runs/demo/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prunefit.cli import main as prunefit

OUT = Path("runs/demo")


def step(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ prunefit {' '.join(argv)}", flush=True)
    t0 = time.time()
    code = prunefit(argv)
    if code:
        sys.exit(code)
    print(f"({time.time() - t0:.0f} s)", flush=True)


def figure_step() -> None:
    """Distilled, Distilled + ESD and bilevel side by side on the toy analogue of the paper's Fig. 6 prompts
    (erased artists, the unsafe concept, a neutral and a kept prompt), one figure per Table-3 concept."""
    from prunefit.recipes.experiment import ROW_NAMES, concept_slug

    prompts = Path(__file__).resolve().parent.parent / "configs/toyworld/prompts/table6_fig6_erasure_after_pruning.csv"
    names = {"distilled": "Distilled", **{r: ROW_NAMES[r] for r in ("distilled+esd", "ours_esd")}}
    for concept in ("skull", "Claude Dots"):
        croot = OUT / "table3" / concept_slug(concept)
        if not all((croot / row).is_dir() for row in names):
            continue
        models = ", ".join(f'{{name: "{name}", path: "{croot / row}"}}' for row, name in names.items())
        step(f"Figure: the Table 3 rows on erased, kept and unsafe prompts ({concept} erased)",
             ["experiment", "figures", f"models=[{models}]", f"prompt_file={prompts}", f'erased=["{concept}"]',
              f"output_dir={croot / 'figure'}"])


def run() -> None:
    t0 = time.time()
    step("The toy teacher: model card and sample grids", ["toyworld", "show", "-o", str(OUT / "show"), "-n", "8"])
    prune_dir = OUT / "prune"
    if not (prune_dir / "prune_summary.json").is_file():
        step("APTP: 4 experts at 0.8 of the teacher's MACs, with a prompt router",
             ["prune", f"output_dir={prune_dir}", "num_experts=4", "target=0.8", "steps=300", "batch_size=8",
              "eval_prompts=0"])
    step("Table 3 in small: two-stage ESD vs bilevel ESD, for the unsafe concept and an artist",
         ["experiment", "table3", f"output_dir={OUT / 'table3'}", f"expert={prune_dir / 'experts' / 'expert-0'}",
          "rows=[distilled+esd, ours_esd]", "concepts=[skull, Claude Dots]", "lower_steps=160", "eval_prompts=50",
          "esd_iterations=40", "upper_every=4", "sample_prompts=6", "kept_artists=1"])
    figure_step()
    print(f"\nDemo finished in {time.time() - t0:.0f} s. Outputs in {OUT.resolve()}:")
    for p in sorted(OUT.rglob("*")):
        if p.suffix in (".md", ".png") and "images" not in p.parts and "samples" not in p.parts[:-1]:
            print(f"  {p}")


if __name__ == "__main__":
    run()
