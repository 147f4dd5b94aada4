"""Routed (mixture-of-experts) generation throughput vs single-model generation (issue: performance, (e)).

N toy-val prompts through `prunefit generate` three ways, timed end to end in this process (loading,
routing, sampling, writing PNGs): the dense teacher; one expert; the APTP router sending each prompt to its
expert (K experts, each loaded once, its prompts batched). Images/s and the ratio to the teacher. Without
--prune-dir a short APTP run (K=4, 80% MACs) is made first: its routing quality does not matter here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from prunefit.config.load import load_config  # noqa: E402
from prunefit.config.schema import GenerateConfig, PruneConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prune-dir", help="a `prunefit prune` (method=aptp) output folder")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    from prunefit.recipes import generate, prune
    from prunefit.toyworld.paths import prompts_dir

    root = Path(tempfile.mkdtemp(prefix="bench-routed-"))
    prune_dir = Path(args.prune_dir) if args.prune_dir else root / "prune"
    if not args.prune_dir:
        prune.main(load_config(PruneConfig, [], [f"output_dir={prune_dir}", "steps=40", "num_experts=4",
                                                 "eval_prompts=0"]))
    summary = json.loads((prune_dir / "prune_summary.json").read_text())
    common = [f"prompt_file={prompts_dir() / 'toy-val.jsonl'}", f"max_prompts={args.prompts}",
              f"sampler.batch_size={args.batch}"]
    runs = {"teacher (dense)": [], "one expert": [f"expert={prune_dir / 'experts' / 'expert-0'}"],
            f"routed ({len(summary['experts'])} experts)": [f"experts={prune_dir}"]}
    rows, base = [], None
    for i, (name, extra) in enumerate(runs.items()):
        cfg = load_config(GenerateConfig, [], [*common, *extra, f"output_dir={root / f'gen{i}'}"])
        t0 = time.perf_counter()
        res = generate.main(cfg)
        t = time.perf_counter() - t0
        base = base or t
        rows.append({"generation": name, "images": res.generated, "seconds": t,
                     "images_per_s": res.generated / t, "time_ratio": t / base})
    macs = [e["mac_ratio"] for e in summary["experts"]]
    report("routed_generation", rows, {"expert_mac_ratios": macs, "prompts": args.prompts, "batch": args.batch,
                                       "sampler": "PNDM 25 steps, CFG 7.5"})


if __name__ == "__main__":
    main()
