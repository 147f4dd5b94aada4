"""Bilevel suppression vs the two-stage pipeline (Distilled + ESD) in wall time, and the upper step's cost.

Issue targets: bilevel wall time <= 1.1x the two-stage pipeline's at the same lower-step budget. Budgets
mirror the paper's proportions, scaled to the toy world: L lower (fine-tuning) steps in both; the two-stage
ESD runs L x 1000 / 20000 iterations (1,000 ESD iterations after 20,000 distillation steps, batch 1, x_t from
50-step DDIM rollouts of the edited model); the bilevel upper step runs every 10 lower steps on a batch as
large as the lower one (the official code's 16 / 16), x_t from noised concept images (the official preset) or
from the student's own DDIM rollouts (the paper's wording, ``--xt model``). Every run starts from the same
magnitude-pruned toy expert and is timed end to end (loading, training, saving) in this process.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, report  # noqa: E402

from prunefit.config.load import load_config  # noqa: E402


def _expert(root: Path) -> Path:
    from prunefit.config.schema import PruneConfig
    from prunefit.recipes import prune

    prune.main(load_config(PruneConfig, [], ["method=magnitude", "target=0.8", f"output_dir={root / 'start'}",
                                             "eval_prompts=0"]))
    return root / "start" / "experts" / "expert-0"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_costs(start: Path, batch: int, concept: str, params: str, runs: int = 5) -> list[dict]:
    """(b) Median ms of one lower step (teacher + KD, forward/backward) and one upper ESD step per x_t source,
    each on ``batch`` samples of the toy expert."""
    from prunefit.config.schema import FinetuneConfig
    from prunefit.data.datasets import ToyWorldData
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert
    from prunefit.removal.context import RemovalContext
    from prunefit.removal.esd.method import ESDConfig, ESDObjective
    from prunefit.training.students import denoising_phase

    comps = load_components("toyworld")
    student, _ = load_expert(start, comps.unet.config)
    student.train().requires_grad_(True)
    _, lower = denoising_phase("lower", student=student, teacher=comps.unet, comps=comps, data=ToyWorldData(),
                               cfg=load_config(FinetuneConfig, [], []), seed=0)
    ctx = RemovalContext(student, comps.unet, comps)
    counter = iter(range(10**6))
    objectives = {"lower step (teacher + KD)": lower}
    for xt in ("images", "model"):
        objectives[f"upper ESD step, x_t from {xt}"] = ESDObjective(ctx, student, ESDConfig(
            concepts=[concept], train_method=params, xt_source=xt, ddim_steps=50))
    rows, base = [], None
    for name, obj in objectives.items():
        def step(obj=obj):
            student.zero_grad(set_to_none=True)
            obj(next(counter) * batch, batch).total.backward()
        t = median_time(step, runs, warmup=1)
        base = base or t
        rows.append({"what": name, "seconds": t, "ratio": t / base, "vs": "lower step"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lower-steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--concept", default="skull")
    ap.add_argument("--xt", choices=["images", "model", "both"], default="both")
    args = ap.parse_args()
    from prunefit.config.schema import FinetuneConfig
    from prunefit.recipes import bilevel, erase, finetune
    from prunefit.removal.bilevel import BilevelConfig
    from prunefit.removal.config import EraseConfig

    root = Path(tempfile.mkdtemp(prefix="bench-bilevel-"))
    start = _expert(root)
    lower = args.lower_steps
    esd_iters = max(1, round(lower * 1000 / 20000))
    concept = json.dumps([args.concept])
    train = [f"train.max_steps={lower}", f"train.micro_batch_size={args.batch}", "train.lr=1e-4",
             "train.warmup_steps=10", "train.checkpoint_every=100000", "train.log_every=10"]
    params = "noxattn" if args.concept == "skull" else "xattn"

    def two_stage() -> None:
        ft = finetune.main(load_config(FinetuneConfig, [], [*train, f"student={start}",
                                                            f"output_dir={root / 'distilled'}"]))
        erase.main(load_config(EraseConfig, [], [f"student={ft.model_path}", f"output_dir={root / 'esd'}",
                                                 "removal.method=esd", f"removal.concepts={concept}",
                                                 f"esd.iterations={esd_iters}", "esd.lr=1e-4", "esd.ddim_steps=50",
                                                 f"esd.train_method={params}"]))

    def bilevel_run(xt: str) -> None:
        bilevel.main(load_config(BilevelConfig, [], [*train, f"student={start}", f"output_dir={root / f'bilevel-{xt}'}",
                                                     "preset=official", "upper_method=esd", f"concepts={concept}",
                                                     "upper_every=10", f"upper_batch_size={args.batch}",
                                                     "upper_lr=1e-4", "upper_warmup_steps=5", "esd.ddim_steps=50",
                                                     f"upper_train_method={params}", f"upper_xt_source={xt}"]))

    t_two = _timed(two_stage)
    rows = [{"what": f"Distilled + ESD ({lower} lower steps + {esd_iters} ESD iterations, batch 1)",
             "seconds": t_two, "ratio": 1.0, "vs": "two-stage"}]
    for xt in (["images", "model"] if args.xt == "both" else [args.xt]):
        t = _timed(lambda: bilevel_run(xt))
        rows.append({"what": f"bilevel, official ({lower} lower + {lower // 10} upper steps of batch "
                             f"{args.batch}, x_t from {xt})", "seconds": t, "ratio": t / t_two, "vs": "two-stage"})
    rows += step_costs(start, args.batch, args.concept, params)
    report("bilevel_wall", rows, {"target": "bilevel <= 1.1x two-stage at the same lower-step budget",
                                  "lower_steps": lower, "batch": args.batch, "concept": args.concept,
                                  "work_dir": str(root)})


if __name__ == "__main__":
    main()
