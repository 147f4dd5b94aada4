"""GPU check (one call, < 5 min on an H100/H200): sd_scale.py's three measurements on SD 2.1-base at 512 px,
batch 8, bf16, random weights from the published configs, plus each training step's peak memory.

1. Expert latency vs MAC ratio (magnitude and APTP-layout experts at 0.9 / 0.8 / 0.65 / 0.5 MACs), a CFG
   forward (2 x batch) per denoising step; target latency ratio <= 1.1 x MAC ratio.
2. Our distillation step with cached latents + text embeddings (teacher forward + output/feature KD + student
   forward/backward + AdamW) vs a plain diffusers-style uncached DDPM step (VAE encode + text encode + student
   forward/backward + AdamW) of the 0.8-MAC expert; target <= 1.0x; peak memory of each (target: fits 40 GB),
   next to the prediction of prunefit.training.memory.
   On a GPU the cached step also runs compiled, as `finetune train.compile=true` (student and teacher forward).
3. Generation: ``--gen-steps`` CFG denoising steps for ``batch`` prompts, images/s of the dense teacher on all of
   them, one 0.8-MAC expert on all of them, and two 0.8-MAC experts on half each (what the router does).
Writes benchmarks/results/gpu_sd21.json (or gpu_sd21_rehearsal.json).

    python benchmarks/gpu_sd21.py              # on the GPU
    python benchmarks/gpu_sd21.py --rehearse   # CPU rehearsal: same code path, batch 1, 8x8 latents, fp32, 1 run
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))  # a bare GPU machine has no editable install
from common import RESULTS, machine, median_time  # noqa: E402
from sd_scale import TARGETS, SyntheticImages, aptp_layout, components, expert  # noqa: E402

from prunefit.config.schema import PruneConfig  # noqa: E402
from prunefit.evaluation.cost import count_macs  # noqa: E402
from prunefit.pruning.baselines import magnitude_scores, prune_to_target  # noqa: E402
from prunefit.pruning.macs import mac_model  # noqa: E402
from prunefit.pruning.spec import gate_spec  # noqa: E402

WIDTH_MULTIPLE = PruneConfig.width_multiple  # experts as `prunefit prune` cuts them (tensor-core tiles)


class Bench:
    def __init__(self, rehearse: bool, gen_steps: int) -> None:
        self.cuda = torch.cuda.is_available() and not rehearse
        if not self.cuda and not rehearse:
            sys.exit("no GPU: run with --rehearse for the CPU rehearsal")
        self.dev = "cuda" if self.cuda else "cpu"
        self.dt = torch.bfloat16 if self.cuda else torch.float32
        self.batch, self.res = (8, 512) if not rehearse else (1, 64)
        self.lat = self.res // 8
        self.runs, self.warmup = (10, 3) if not rehearse else (1, 0)
        self.gen_steps = gen_steps if not rehearse else 2
        self.rehearse = rehearse

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def peak_reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def inputs(self, batch: int, cfg: bool = True):
        n = 2 * batch if cfg else batch
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 4, self.lat, self.lat, generator=g).to(self.dev, self.dt)
        c = torch.randn(n, 77, 1024, generator=g).to(self.dev, self.dt)
        return x, torch.full((n,), 500, device=self.dev), c


def latency(b: Bench, teacher, spec, macs) -> list[dict]:
    x, t, c = b.inputs(b.batch)
    text = 77

    def fwd(unet):
        with torch.inference_mode():
            return median_time(lambda: unet(x, t, c), b.runs, b.warmup)

    t_teacher, teacher_macs = fwd(teacher), count_macs(teacher, b.lat, text)
    scores = magnitude_scores(teacher, spec)
    rows = []
    for target in TARGETS:
        for kind in ("magnitude", "aptp-layout"):
            arch = (prune_to_target(spec, macs, scores, target, WIDTH_MULTIPLE) if kind == "magnitude"
                    else aptp_layout(spec, macs, target, WIDTH_MULTIPLE))
            e = expert(teacher, spec, arch)
            mac_ratio = count_macs(e, b.lat, text) / teacher_macs
            ratio = fwd(e) / t_teacher
            rows.append({"section": "expert latency", "what": f"{kind} {target}", "batch": b.batch,
                         "mac_ratio": mac_ratio, "latency_ratio": ratio, "latency/mac": ratio / mac_ratio,
                         "meets_target": ratio <= 1.1 * mac_ratio, "teacher_ms": 1000 * t_teacher})
            print(rows[-1], flush=True)
            del e
            gc.collect()
    return rows


def steps(b: Bench, comps, student_of) -> list[dict]:
    """Plain uncached DDPM step vs our cached distillation step (batch b.batch), peak memory of each."""
    import tempfile

    from diffusers import DDPMScheduler

    from prunefit.data.cache import build_cache, load_cache
    from prunefit.models.components import encode_images, encode_prompts
    from prunefit.models.features import drop_feature_hooks
    from prunefit.objectives.denoising import DenoisingObjective
    from prunefit.objectives.inputs import InputBuilder
    from prunefit.training.students import compile_forward

    data = SyntheticImages(b.res)
    sched = DDPMScheduler.from_config(comps.scheduler.config)
    cache = load_cache(build_cache(comps, data, b.batch * 2, Path(tempfile.mkdtemp()) / "cache", batch_size=b.batch))
    cache.mean, cache.std, cache.text = (v.to(b.dev, b.dt) for v in (cache.mean, cache.std, cache.text))
    rows, base, i = [], None, [0]
    for name in ("plain DDPM step (uncached)", "ours: teacher + KD (cached)", "ours: cached, compiled"):
        if name.endswith("compiled") and not b.compile:
            continue
        student = student_of()
        if name.endswith("compiled"):
            compile_forward(student)  # as `finetune train.compile=true`: feature hooks registered before compiling
            compile_forward(comps.unet)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-6, fused=b.cuda or None)
        if name.startswith("plain"):
            def step(student=student, opt=opt):
                images, caps = data.samples(i[0] * b.batch, b.batch)
                i[0] += 1
                with torch.no_grad():
                    lat, txt = encode_images(comps, images), encode_prompts(comps, caps)
                noise, t = torch.randn_like(lat), torch.randint(0, 1000, (b.batch,), device=b.dev)
                with torch.autocast(b.dev, dtype=torch.bfloat16, enabled=b.cuda):
                    pred = student(sched.add_noise(lat, noise, t), t, txt).sample
                loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        else:
            builder = InputBuilder(components=comps, data=data, seed=0, cache=cache, device=b.dev)
            obj = DenoisingObjective(student=student, teacher=comps.unet, inputs=builder,
                                     alphas_cumprod=sched.alphas_cumprod.to(b.dev),
                                     prediction_type=comps.prediction_type)

            def step(obj=obj, opt=opt):
                with torch.autocast(b.dev, dtype=torch.bfloat16, enabled=b.cuda):
                    out = obj(i[0] * b.batch, b.batch)
                i[0] += 1
                opt.zero_grad(set_to_none=True)
                out.total.backward()
                opt.step()
        b.peak_reset()
        s = median_time(step, b.runs, max(b.warmup, 1))
        base = base or s
        rows.append({"section": "distillation step", "what": name, "batch": b.batch, "ms": 1000 * s,
                     "ratio": s / base, "peak_gb": b.peak_gb()})
        print(rows[-1], flush=True)
        if name.endswith("compiled"):  # the teacher runs eager again in the generation rows
            del comps.unet.forward
            drop_feature_hooks(comps.unet)
        student = opt = step = None
        gc.collect()
    return rows


def predicted(b: Bench, comps, student) -> dict:
    """What prunefit.training.memory predicts for the cached distillation step (bf16 autocast, bf16 teacher)."""
    from prunefit.training.memory import GB, MemoryInputs, activation_profile, estimate, n_params

    prof = activation_profile(student, b.lat)
    m = MemoryInputs(student_params=n_params(student), trainable_params=n_params(student),
                     teacher_params=n_params(comps.unet),
                     frozen_params=n_params(comps.vae) + n_params(comps.text_encoder),
                     saved_bytes_per_sample=prof.plain, batch=b.batch, mixed_precision="bf16" if b.cuda else "no",
                     teacher_dtype="bfloat16" if b.cuda else "float32", overhead=0.0)
    return {"section": "distillation step", "what": "predicted by training.memory (no margin)", "batch": b.batch,
            "peak_gb": estimate(m).total / GB}


def routed(b: Bench, teacher, experts) -> list[dict]:
    """gen_steps CFG denoising steps: the teacher on all prompts vs each expert on its share."""
    from diffusers import PNDMScheduler

    x, _, c = b.inputs(b.batch)
    share = max(1, b.batch // len(experts))

    def loop(parts):
        sched = PNDMScheduler(skip_prk_steps=True, steps_offset=1, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012)
        sched.set_timesteps(b.gen_steps)
        with torch.inference_mode():
            for ts in sched.timesteps:
                for unet, lo, hi in parts:
                    xi = torch.cat([x[lo:hi], x[b.batch + lo:b.batch + hi]])
                    ci = torch.cat([c[lo:hi], c[b.batch + lo:b.batch + hi]])
                    unet(xi, ts.to(b.dev).expand(xi.shape[0]), ci)

    t_teacher = median_time(lambda: loop([(teacher, 0, b.batch)]), b.runs, b.warmup)
    parts = [(e, k * share, min(b.batch, (k + 1) * share)) for k, e in enumerate(experts)]
    t_routed = median_time(lambda: loop([p for p in parts if p[1] < p[2]]), b.runs, b.warmup)
    t_one = median_time(lambda: loop([(experts[0], 0, b.batch)]), b.runs, b.warmup)
    per_s = lambda t: b.batch / t  # noqa: E731 - images per second through the UNet loop (no VAE decode)
    return [{"section": "generation", "what": f"{what}, {b.gen_steps} CFG steps", "batch": b.batch, "ms": 1000 * t,
             "images_per_s": per_s(t), "vs_teacher": t_teacher / t}
            for what, t in (("teacher", t_teacher), ("one 0.8-MAC expert", t_one),
                            (f"{len(experts)} routed experts", t_routed))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rehearse", action="store_true", help="CPU rehearsal: batch 1, 64 px, fp32, one run")
    ap.add_argument("--gen-steps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled distillation step")
    args = ap.parse_args()
    b = Bench(args.rehearse, args.gen_steps)
    b.compile = b.cuda and not args.no_compile
    if not b.cuda:
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    comps = components("sd21-base").to(b.dev, b.dt)
    teacher = comps.unet
    spec = gate_spec(teacher, 32)
    macs = mac_model(teacher, spec, b.lat, 77)
    rows = latency(b, teacher, spec, macs)
    arch = prune_to_target(spec, macs, magnitude_scores(teacher, spec), 0.8, WIDTH_MULTIPLE)
    # fp32 master weights + bf16 autocast, as `prunefit finetune train.mixed_precision=bf16`
    rows += steps(b, comps, lambda: expert(teacher, spec, arch).float().train().requires_grad_(True))
    rows.append(predicted(b, comps, expert(teacher, spec, arch).float()))
    experts = [expert(teacher, spec, arch), expert(teacher, spec, aptp_layout(spec, macs, 0.8, WIDTH_MULTIPLE))]
    rows += routed(b, teacher, experts)
    wall = time.perf_counter() - t0
    for r in rows:
        print(r)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("gpu_sd21_rehearsal.json" if args.rehearse else "gpu_sd21.json")
    path.write_text(json.dumps({"benchmark": "gpu_sd21", "machine": machine(), "rows": rows, "wall_s": wall,
                                "batch": b.batch, "resolution": b.res, "dtype": str(b.dt),
                                "threads": torch.get_num_threads(),
                                **({"rehearsal": "code path only: 8x8 latents, one cold run each (the teacher's "
                                                 "first forward pays the warm-up); ratios and meets_target mean "
                                                 "nothing here"} if args.rehearse else {})}, indent=1))
    print(f"wall {wall:.0f} s -> {path}")


if __name__ == "__main__":
    main()
