"""`make demo`: the main job on the toy world, end to end on a CPU, printing where every output went.

Today it shows the toy teacher's model card, writes sample grids per artist and for the unsafe concept,
and generates the first 64 toy-val captions through `prunefit generate`. Later stages of the paper's
pipeline (prune -> distil -> erase -> evaluate -> report) join here as they land.
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
    print(f"({time.time() - t0:.1f} s)")


def run() -> None:
    from prunefit.toyworld.paths import assets_dir as default_assets_dir

    prompts = default_assets_dir() / "prompts" / "toy-val.jsonl"
    step("The toy teacher: model card and sample grids", ["toyworld", "show", "-o", str(OUT / "show"), "-n", "16"])
    step("Generate 64 toy-val captions (PNDM 25 steps, CFG 7.5)",
         ["generate", "--prompt-file", str(prompts), "-o", str(OUT / "generate"), "max_prompts=64",
          "sampler.batch_size=32"])
    print(f"\nDemo outputs are in {OUT.resolve()}:")
    for p in sorted(OUT.rglob("*.png")):
        if p.parent.name != "images":
            print(f"  {p}")


if __name__ == "__main__":
    run()
