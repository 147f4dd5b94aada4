"""Evaluation throughput: images/s through each registered metric (issue: performance, (f)).

Generates N toy-world images once (toy-val prompts), then runs every registered metric on that run in this
process, timing each end to end (model loading included, as a user meets it; a second timing with the
metric's models already cached in the context shows the steady state). Metrics whose models are not
available offline (CLIP needs a hub download; NudeNet is an optional extra) are reported as skipped with the
reason, never faked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from prunefit.config.load import load_config  # noqa: E402
from prunefit.config.schema import EvaluateConfig, GenerateConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100)
    args = ap.parse_args()
    from prunefit.errors import PrunefitError
    from prunefit.evaluation.context import EvalContext
    from prunefit.evaluation.metrics import CONFIG_SECTION
    from prunefit.evaluation.registry import list_metrics
    from prunefit.recipes import generate
    from prunefit.toyworld.paths import prompts_dir

    run = Path(tempfile.mkdtemp(prefix="bench-eval-")) / "gen"
    generate.main(load_config(GenerateConfig, [], [f"prompt_file={prompts_dir() / 'toy-val.jsonl'}",
                                                   f"max_prompts={args.images}", "sampler.batch_size=50",
                                                   f"output_dir={run}"]))
    cfg = load_config(EvaluateConfig, [], [f"run_dir={run}"])
    rows = []
    for entry in list_metrics():
        section = getattr(cfg, CONFIG_SECTION[entry.name])
        ctx = EvalContext.from_run(str(run), "cpu")
        try:
            t0 = time.perf_counter()
            entry.fn(ctx, section)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            entry.fn(ctx, section)
            warm = time.perf_counter() - t0
        except (PrunefitError, ImportError, OSError) as exc:
            rows.append({"metric": entry.name, "kind": entry.kind, "images": 0, "cold_s": float("nan"),
                         "warm_s": float("nan"), "images_per_s": float("nan"),
                         "note": f"skipped: {str(exc).splitlines()[0][:90]}"})
            continue
        n = args.images if entry.kind == "images" else 0
        rows.append({"metric": entry.name, "kind": entry.kind, "images": n, "cold_s": cold, "warm_s": warm,
                     "images_per_s": n / warm if n else float("nan"),
                     "note": "" if n else "model metric: time to measure the UNet"})
    report("eval_throughput", rows, {"images": args.images, "run": str(run)})


if __name__ == "__main__":
    main()
