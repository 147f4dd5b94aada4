"""SD-scale CPU benchmarks on the SD 2.1-base UNet at 512 px (64x64 latents), batch 1, random weights from config.

1. Expert latency vs MAC ratio at 0.9 / 0.8 / 0.65 / 0.5 MACs, magnitude experts and APTP-layout experts (depth
   gates dropped in APTP's importance order, the rest scattered width gates); target latency ratio <= 1.1 x MAC
   ratio. A row that misses names the ops that account for the excess (torch.profiler, one forward each).
   Kept widths are rounded to multiples of ``--width-multiple`` (default: the prune config's, 8; 1 = off).
2. Our distillation step with cached latents + text embeddings (teacher forward + output/feature KD + student
   forward/backward + AdamW) vs a plain diffusers-style uncached DDPM step (VAE encode + text encode + student
   forward/backward + AdamW) of the same 0.8-MAC expert; target <= 1.0x. Each stage is timed too.
3. Routed generation (`prunefit generate --experts`, a `prunefit prune` folder of the same UNet shapes) vs the
   dense teacher through the same recipe, a few PNDM steps with CFG at 512 px.
Threads are fixed (``--threads``, default 1) and recorded; medians over ``--runs``.
Writes benchmarks/results/sd_scale.json. Run under the heavy-jobs lock:
    flock /tmp/prunefit-heavy.lock env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sd_scale.py
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time  # noqa: E402

from prunefit.config.schema import PruneConfig  # noqa: E402
from prunefit.evaluation.cost import count_macs, measure_latency  # noqa: E402
from prunefit.models.inputs import unet_inputs  # noqa: E402
from prunefit.pruning.baselines import magnitude_scores, prune_to_target, random_scores  # noqa: E402
from prunefit.pruning.macs import mac_model  # noqa: E402
from prunefit.pruning.materialize import materialize  # noqa: E402
from prunefit.pruning.router import importance_order  # noqa: E402
from prunefit.pruning.spec import gate_spec  # noqa: E402

ARCH = "sd21-base"
TARGETS = (0.9, 0.8, 0.65, 0.5)


def aptp_layout(spec, macs, target: float, width_multiple: int, seed: int = 0) -> torch.Tensor:
    """An APTP-shaped architecture at ``target``: depth gates dropped least-protected first while they take
    at most half of the MAC cut, then width gates by random scores (a router's choices are not magnitude's),
    widths rounded to ``width_multiple``."""
    arch = torch.ones(spec.dim)
    order = importance_order(spec)
    for j in reversed(order):
        trial = arch.clone()
        trial[spec.width_dim + j] = 0.0
        if 1 - float(macs.ratio(trial.unsqueeze(0))) > (1 - target) / 2:
            break
        arch = trial
    width = prune_to_target(spec, macs, random_scores(spec, seed), target / float(macs.ratio(arch.unsqueeze(0))),
                            width_multiple)
    arch[: spec.width_dim] = width[: spec.width_dim]
    while float(macs.ratio(arch.unsqueeze(0))) > target + 0.01:  # width pruning ignores the dropped depth
        width = prune_to_target(spec, macs, random_scores(spec, seed), float(macs.ratio(width.unsqueeze(0))) - 0.02,
                                width_multiple)
        arch[: spec.width_dim] = width[: spec.width_dim]
    return arch


def expert(teacher, spec, arch):
    e = copy.deepcopy(teacher)
    materialize(e, spec, arch)
    return e.eval()


def op_excess(teacher, student, lat: int, text: int, mac_ratio: float, top: int = 3) -> str:
    """The ops whose expert time most exceeds mac_ratio x their teacher time (one profiled forward each)."""
    from torch.profiler import ProfilerActivity, profile

    def times(unet):
        x, t, c = unet_inputs(unet, 1, lat, text)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            unet(x, t, c)
        return {e.key: e.self_cpu_time_total for e in prof.key_averages()}

    tt, te = times(teacher), times(student)
    excess = sorted(((te.get(k, 0) - mac_ratio * tt.get(k, 0), k) for k in set(tt) | set(te)), reverse=True)
    total = sum(te.values()) - mac_ratio * sum(tt.values())
    return "; ".join(f"{k} +{v / 1e3:.0f} ms" for v, k in excess[:top]) + f" (total excess {total / 1e3:.0f} ms)"


def latency_rows(teacher, lat: int, text: int, runs: int, width_multiple: int, limit: float = 1.1) -> list[dict]:
    spec = gate_spec(teacher, 32)
    macs = mac_model(teacher, spec, lat, text)
    scores = magnitude_scores(teacher, spec)
    t_teacher = measure_latency(teacher, lat, text, 1, runs, warmup=1)["median_s"]
    teacher_macs = count_macs(teacher, lat, text)
    rows = []
    for target in TARGETS:
        for kind in ("magnitude", "aptp-layout"):
            arch = (prune_to_target(spec, macs, scores, target, width_multiple) if kind == "magnitude"
                    else aptp_layout(spec, macs, target, width_multiple))
            e = expert(teacher, spec, arch)
            mac_ratio = count_macs(e, lat, text) / teacher_macs
            t = measure_latency(e, lat, text, 1, runs, warmup=1)["median_s"]
            ratio = t / t_teacher
            ok = ratio <= limit * mac_ratio
            rows.append({"expert": f"{kind} {target}", "mac_ratio": mac_ratio, "latency_ratio": ratio,
                         "latency/mac": ratio / mac_ratio, "teacher_ms": 1000 * t_teacher, "expert_ms": 1000 * t,
                         "depth_dropped": int(spec.depth_dim - arch[spec.width_dim:].sum()),
                         "meets_target": ok, "why": "" if ok else op_excess(teacher, e, lat, text, mac_ratio)})
            print(rows[-1], flush=True)
            del e
            gc.collect()
    return rows


class SyntheticImages:
    """Smooth random 512-px images in [-1, 1] with fixed captions (a stand-in for COCO at the same size)."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.captions = ["a photo of a cat sitting on a red sofa", "a bowl of fruit on a wooden table"]

    def samples(self, start: int, n: int):
        g = torch.Generator().manual_seed(start)
        small = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
        img = torch.nn.functional.interpolate(small, size=self.resolution, mode="bicubic", align_corners=False)
        return img.clamp(-1, 1), [self.captions[(start + i) % 2] for i in range(n)]


def components(arch: str):
    from prunefit.models import skeleton as sk
    from prunefit.models.components import Components

    torch.manual_seed(0)
    comps = Components(unet=sk.build_unet(arch), vae=sk.build_vae(arch), text_encoder=sk.build_text_encoder(arch),
                       tokenizer=sk.clip_tokenizer(pad_token=sk.tokenizer_pad_token(arch)),
                       scheduler=sk.build_scheduler(arch), source=f"{arch} skeleton (random weights)")
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.eval().requires_grad_(False)
    return comps


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _plain_step(comps, student, opt, sched, data, stages: dict, counter: dict):
    from prunefit.models.components import encode_images, encode_prompts

    def step():
        images, caps = data.samples(counter["i"], 1)
        counter["i"] += 1
        with torch.no_grad():
            t0 = time.perf_counter()
            lat = encode_images(comps, images)
            stages["vae_encode"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            txt = encode_prompts(comps, caps)
            stages["text_encode"] = time.perf_counter() - t0
        noise, t = torch.randn_like(lat), torch.randint(0, 1000, (1,))
        t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(student(sched.add_noise(lat, noise, t), t, txt).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        stages["student_fwd_bwd"] = time.perf_counter() - t0
        stages["adamw"] = _timed(opt.step)
    return step


def _ours_step(obj, opt, stages: dict, counter: dict):
    def step():
        t0 = time.perf_counter()
        out = obj(counter["i"], 1)
        counter["i"] += 1
        stages["teacher_fwd+student_fwd+kd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        stages["backward"] = time.perf_counter() - t0
        stages["adamw"] = _timed(opt.step)
    return step


def step_rows(comps, student_of, resolution: int, runs: int) -> list[dict]:
    """Plain uncached DDPM step vs our cached distillation step of the same expert; stage times of one step."""
    from diffusers import DDPMScheduler

    from prunefit.data.cache import build_cache, load_cache
    from prunefit.objectives.denoising import DenoisingObjective
    from prunefit.objectives.inputs import InputBuilder

    data = SyntheticImages(resolution)
    sched = DDPMScheduler.from_config(comps.scheduler.config)
    cache = load_cache(build_cache(comps, data, 2, Path(tempfile.mkdtemp()) / "cache", batch_size=1))
    rows, base, counter = [], None, {"i": 0}
    for name in ("plain DDPM step (uncached)", "ours: teacher + KD (cached)"):
        student = student_of()
        opt = torch.optim.AdamW(student.parameters(), lr=1e-6)
        stages: dict[str, float] = {}
        if name.startswith("plain"):
            step = _plain_step(comps, student, opt, sched, data, stages, counter)
        else:
            builder = InputBuilder(components=comps, data=data, seed=0, cache=cache)
            obj = DenoisingObjective(student=student, teacher=comps.unet, inputs=builder,
                                     alphas_cumprod=sched.alphas_cumprod, prediction_type=comps.prediction_type)
            step = _ours_step(obj, opt, stages, counter)
        t = median_time(step, runs, warmup=1)
        base = base or t
        rows.append({"step": name, "ms": 1000 * t, "ratio": t / base,
                     "stages_ms (last step)": {k: round(1000 * v) for k, v in stages.items()}})
        print(rows[-1], flush=True)
        student = opt = step = None
        gc.collect()
    return rows


def routed_rows(model: str, prune_dir: Path, steps: int, resolution: int) -> list[dict]:
    from prunefit.config.load import load_config
    from prunefit.config.schema import GenerateConfig
    from prunefit.recipes import generate

    root = Path(tempfile.mkdtemp(prefix="bench-sd-routed-"))
    prompts = ["a photo of a cat", "a painting of a house in the style of Claude Monet"]
    common = [f"model={model}", f"prompts={prompts!r}".replace("'", '"'), f"sampler.steps={steps}",
              f"sampler.height={resolution}", f"sampler.width={resolution}", "sampler.batch_size=2"]
    rows, base = [], None
    for i, (name, extra) in enumerate((("teacher (dense)", []), ("routed (experts)", [f"experts={prune_dir}"]))):
        cfg = load_config(GenerateConfig, [], [*common, *extra, f"output_dir={root / f'g{i}'}"])
        t0 = time.perf_counter()
        generate.main(cfg)
        t = time.perf_counter() - t0
        base = base or t
        rows.append({"generation": name, "images": len(prompts), "seconds": t, "images_per_s": len(prompts) / t,
                     "throughput_ratio": base / t})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--prune-dir", type=Path, default=Path("runs/smoke-sd/sd21/prune"),
                    help="a `prunefit prune` folder of an SD 2.x skeleton (same UNet shapes as SD 2.1-base)")
    ap.add_argument("--model", default="runs/skeletons/sd21", help="the pipeline that prune folder came from")
    ap.add_argument("--gen-steps", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], choices=["latency", "step", "routed"])
    ap.add_argument("--width-multiple", type=int, default=PruneConfig.width_multiple,
                    help="round the experts' kept widths to multiples of this (1 = off; default %(default)s)")
    args = ap.parse_args()
    if args.width_multiple < 1:
        ap.error(f"--width-multiple must be >= 1, got {args.width_multiple}")
    torch.set_num_threads(args.threads)
    lat, text = args.resolution // 8, 77
    extra = {"arch": ARCH, "resolution": args.resolution, "batch": 1, "threads": torch.get_num_threads(),
             "runs": args.runs, "weights": "random (seed 0)", "width_multiple": args.width_multiple}
    rows = []
    comps = components(ARCH)
    if "latency" not in args.skip:
        rows += [{"section": "expert latency", **r}
                 for r in latency_rows(comps.unet, lat, text, args.runs, args.width_multiple)]
    if "step" not in args.skip:
        spec = gate_spec(comps.unet, 32)
        arch = prune_to_target(spec, mac_model(comps.unet, spec, lat, text), magnitude_scores(comps.unet, spec), 0.8,
                               args.width_multiple)
        teacher = comps.unet
        rows += [{"section": "distillation step", **r} for r in step_rows(
            comps, lambda: expert(teacher, spec, arch).train().requires_grad_(True), args.resolution, args.runs)]
        teacher = None
    comps = None
    gc.collect()
    if "routed" not in args.skip:
        if (args.prune_dir / "prune_summary.json").is_file():
            rows += [{"section": "routed generation", **r}
                     for r in routed_rows(args.model, args.prune_dir, args.gen_steps, args.resolution)]
        else:
            extra["routed"] = f"skipped: no prune folder at {args.prune_dir} (run make smoke-sd first)"
    targets = {"latency": "latency_ratio <= 1.1 x mac_ratio", "step": "ours (cached) <= 1.0 x plain uncached",
               "routed": "throughput ratio vs the dense teacher"}
    write(rows, {**extra, "targets": targets})


def write(rows: list[dict], extra: dict) -> Path:
    """One table per section on stdout; every row in benchmarks/results/sd_scale.json."""
    import json

    from common import RESULTS, _fmt, machine

    for section in dict.fromkeys(r["section"] for r in rows):
        part = [{k: v for k, v in r.items() if k != "section"} for r in rows if r["section"] == section]
        cols = list(dict.fromkeys(k for r in part for k in r))
        print(f"\n## {section}\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in part:
            print("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "sd_scale.json"
    same = ("arch", "resolution", "threads", "runs", "width_multiple")
    if path.is_file():  # sections this run skipped keep their rows from an earlier run of the same settings
        old = json.loads(path.read_text())
        ran = {r["section"] for r in rows}
        if all(old.get(k) == extra.get(k) for k in same):
            kept = [r for r in old.get("rows", []) if r["section"] not in ran]
            rows = kept + rows
            if kept:
                print(f"(kept {len(kept)} rows of skipped sections from {path})")
    path.write_text(json.dumps({"benchmark": "sd_scale", "machine": machine(), "rows": rows, **extra}, indent=1))
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    main()
