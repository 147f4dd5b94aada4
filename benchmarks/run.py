"""`make bench`: run every CPU benchmark (each prints a table and writes benchmarks/results/<name>.json)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for name in ("expert_latency", "finetune_step", "bilevel_wall", "routed_generation", "eval_throughput",
             "sd_scale"):  # sd_scale: SD 2.1-base at 512 px, ~15 min on one thread
    print(f"\n##### {name}")
    sys.argv = [str(HERE / f"{name}.py")]
    runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
