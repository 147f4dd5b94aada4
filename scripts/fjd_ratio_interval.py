"""Bootstrap interval of the toy-val FJD ratio edit / teacher that check_erase_defaults judges on a fixed bound.

Each model (and the dense toy teacher) samples the same toy-val rows with their fixed seeds; the judge's features of
those images and of the ground-truth renders are resampled together, prompt by prompt (one index draw for all three
arrays), and the ratio FJD(edit) / FJD(teacher) is recomputed per draw. It says whether a cell's miss of the 1.5x
bound is the edit or the 200 prompts it was judged on. It also reports where an edit moves the images: the mean
distance, per prompt, between the edit's and the teacher's judge features (same prompt, same seed), grouped by each
ground-truth attribute. Writes JSON to --output and prints it.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/fjd_ratio_interval.py runs/check_erase_defaults/pablo-blocks-esd/pipeline
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ATTRIBUTES = ("gt_obj", "gt_colour", "gt_background", "gt_size")


def features(judge, images: torch.Tensor) -> np.ndarray:
    """Judge features [N, 128] of uint8 images, as the FJD metric extracts them."""
    from prunefit.toyworld.metrics import JudgeFeatures

    with torch.no_grad():
        return JudgeFeatures(judge)(images.float() / 255.0).numpy()


def moved_by_attribute(edit: np.ndarray, teacher: np.ndarray, rows: list[dict]) -> dict:
    """Mean per-prompt feature distance edit vs teacher, overall and for each value of each attribute."""
    dist = np.linalg.norm(edit - teacher, axis=1)
    out: dict = {"all": float(dist.mean())}
    for attr in ATTRIBUTES:
        values = sorted({r[attr] for r in rows})
        out[attr] = {v: float(dist[[r[attr] == v for r in rows]].mean()) for v in values}
    return out


def main() -> None:
    from prunefit.config.schema import SamplerConfig
    from prunefit.evaluation.fid import fid_from_features
    from prunefit.evaluation.intervals import bootstrap_interval
    from prunefit.generation.toyworld_quality import generate_rows
    from prunefit.models.components import load_components
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.metrics import reference_renders
    from prunefit.toyworld.paths import judge_dir, prompts_dir, teacher_dir
    from prunefit.toyworld.prompts import read_rows, scene_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="erased pipeline folders")
    p.add_argument("--split", choices=["test", "dev"], default="test",
                   help="test: the first --val-n toy-val rows (as check_erase_defaults); dev: the last")
    p.add_argument("--val-n", type=int, default=200)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--bound", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default="runs/check_erase_defaults/fjd_ratio_interval.json")
    args = p.parse_args()
    missing = [m for m in args.models if not (Path(m) / "model_index.json").is_file()]
    if missing:
        sys.exit(f"not a pipeline folder (no model_index.json): {missing[0]}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    rows = read_rows(prompts_dir() / "toy-val.jsonl")
    rows = rows[: args.val_n] if args.split == "test" else rows[-args.val_n:]
    judge, sampler = load_judge(judge_dir()), SamplerConfig(batch_size=50)
    ref = features(judge, reference_renders([scene_of(r) for r in rows]))
    feats = {name: features(judge, generate_rows(load_components(str(path)), rows, sampler, desc=name))
             for name, path in {"teacher": teacher_dir(), **{m: m for m in args.models}}.items()}

    def ratio(groups) -> float:
        edit, teacher, reference = groups[0]
        return fid_from_features(torch.from_numpy(edit), torch.from_numpy(reference)) / fid_from_features(
            torch.from_numpy(teacher), torch.from_numpy(reference))

    out = {"split": args.split, "prompts": len(rows), "n_boot": args.n_boot, "threads": args.threads,
           "teacher_fjd": fid_from_features(torch.from_numpy(feats["teacher"]), torch.from_numpy(ref)), "models": {}}
    for m in args.models:
        iv = bootstrap_interval([(feats[m], feats["teacher"], ref)], ratio, n_boot=args.n_boot)
        out["models"][m] = {"ratio": iv.estimate, "ci95": [iv.low, iv.high], "bound": args.bound,
                            "interval_above_bound": iv.low > args.bound,
                            "moved": moved_by_attribute(feats[m], feats["teacher"], rows)}
    out["seconds"] = time.time() - t0
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
