"""Expert vs teacher UNet latency against the MAC ratio (issue: pruning, target latency ratio <= 1.15x MAC ratio).

For every expert of a `prunefit prune` run (or magnitude-pruned experts at several targets when none is
given): UNet forward at batch 1 and 8, median of 20 after 3 warm-ups, teacher measured in the same process.
Magnitude experts keep widths on multiples of ``--width-multiple`` (default: the prune config's, 8; 1 = off).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from prunefit.config.schema import PruneConfig  # noqa: E402
from prunefit.evaluation.cost import count_macs, measure_latency  # noqa: E402
from prunefit.models.components import load_components  # noqa: E402
from prunefit.pruning.baselines import magnitude_scores, prune_to_target  # noqa: E402
from prunefit.pruning.expert import load_expert  # noqa: E402
from prunefit.pruning.macs import mac_model  # noqa: E402
from prunefit.pruning.materialize import materialize  # noqa: E402
from prunefit.pruning.spec import gate_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prune-dir", help="a `prunefit prune` output folder (default: magnitude experts 0.5-0.9)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--width-multiple", type=int, default=PruneConfig.width_multiple,
                    help="round the magnitude experts' kept widths to multiples of this (1 = off; default %(default)s)")
    args = ap.parse_args()
    comps = load_components("toyworld")
    lat = comps.native_resolution // comps.vae_scale_factor
    text = comps.tokenizer.model_max_length
    experts = []
    if args.prune_dir:
        for p in sorted((Path(args.prune_dir) / "experts").glob("expert-*")):
            experts.append((p.name, load_expert(p, comps.unet.config)[0]))
    else:
        spec = gate_spec(comps.unet, 32)
        macs = mac_model(comps.unet, spec, lat, text)
        for target in (0.9, 0.8, 0.65, 0.5):
            e = copy.deepcopy(comps.unet)
            materialize(e, spec, prune_to_target(spec, macs, magnitude_scores(comps.unet, spec), target,
                                                 args.width_multiple))
            experts.append((f"magnitude-{target}", e))
    teacher_macs = count_macs(comps.unet, lat, text)
    rows = []
    for batch in (1, 8, 32):  # the toy UNet is small: at batch 1-8 per-op overhead, not MACs, dominates
        t_teacher = measure_latency(comps.unet, lat, text, batch, args.runs)["median_s"]
        for name, unet in experts:
            mac_ratio = count_macs(unet, lat, text) / teacher_macs
            t = measure_latency(unet.eval(), lat, text, batch, args.runs)["median_s"]
            rows.append({"expert": name, "batch": batch, "mac_ratio": mac_ratio, "latency_ratio": t / t_teacher,
                         "latency/mac": (t / t_teacher) / mac_ratio, "teacher_ms": 1000 * t_teacher,
                         "expert_ms": 1000 * t})
    report("expert_latency", rows, {"target": "latency_ratio <= 1.1 x mac_ratio (performance issue; pruning issue: "
                                                  "1.15x)",
                                    "threads": torch.get_num_threads(),
                                    "width_multiple": None if args.prune_dir else args.width_multiple})


if __name__ == "__main__":
    main()
