"""Distillation step vs a plain diffusers-style DDPM step of the same student (issue: fine-tuning, target <= 1.0x).

Baseline ("plain"): VAE encode + text encode + student forward/backward + AdamW, as diffusers'
train_text_to_image.py does. Ours: teacher forward (no_grad) + student forward/backward with output and
feature distillation + AdamW, with latents and text embeddings either computed per step or read from a
`prunefit cache`. Run on the toy expert (the toy world's resolution) and on an SD-2.1-structured UNet
scaled down to run on a CPU. Ratios are measured in the same process.
"""

from __future__ import annotations

import copy
import sys

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import median_time, report  # noqa: E402

from prunefit.config.schema import PruneConfig  # noqa: E402
from prunefit.data.cache import build_cache, load_cache  # noqa: E402
from prunefit.data.datasets import ToyWorldData  # noqa: E402
from prunefit.models.components import encode_images, encode_prompts, load_components  # noqa: E402
from prunefit.objectives.denoising import DenoisingObjective  # noqa: E402
from prunefit.objectives.inputs import InputBuilder  # noqa: E402
from prunefit.pruning.baselines import magnitude_scores, prune_to_target  # noqa: E402
from prunefit.pruning.macs import mac_model  # noqa: E402
from prunefit.pruning.materialize import materialize  # noqa: E402
from prunefit.pruning.spec import gate_spec  # noqa: E402


def expert_of(comps, target=0.8):
    spec = gate_spec(comps.unet, 32)
    lat = comps.native_resolution // comps.vae_scale_factor
    macs = mac_model(comps.unet, spec, lat, comps.tokenizer.model_max_length)
    arch = prune_to_target(spec, macs, magnitude_scores(comps.unet, spec), target, PruneConfig.width_multiple)
    student = copy.deepcopy(comps.unet)
    materialize(student, spec, arch)
    return student.train().requires_grad_(True)


def measure(comps, label: str, batch: int, runs: int, compile_rows: bool = False) -> list[dict]:
    data = ToyWorldData(seed=0)
    sched = DDPMScheduler.from_config(comps.scheduler.config)
    base_student = expert_of(comps)
    counter = {"i": 0}

    def plain(student):
        opt = torch.optim.AdamW(student.parameters(), lr=1e-6)

        def step():
            images, captions = data.samples(counter["i"] * batch, batch)
            counter["i"] += 1
            with torch.no_grad():
                latents = encode_images(comps, images)
                text = encode_prompts(comps, captions)
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch,))
            pred = student(sched.add_noise(latents, noise, t), t, text).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def ours(student, teacher, cache):
        opt = torch.optim.AdamW(student.parameters(), lr=1e-6)
        builder = InputBuilder(components=comps, data=data, seed=0, cache=cache)
        obj = DenoisingObjective(student=student, teacher=teacher, inputs=builder, alphas_cumprod=sched.alphas_cumprod,
                                 prediction_type=comps.prediction_type)

        def step():
            out = obj(counter["i"] * batch, batch)
            counter["i"] += 1
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
        return step

    cache = load_cache(build_cache(comps, data, batch * (runs + 8), __import__("pathlib").Path(
        __import__("tempfile").mkdtemp()) / "cache", batch_size=batch))
    fresh = lambda: copy.deepcopy(base_student)  # noqa: E731  (every variant trains its own copy)
    teacher_bf16 = copy.deepcopy(comps.unet).to(torch.bfloat16)
    variants = [("plain DDPM (uncached)", plain(fresh())),
                ("ours: teacher + KD (uncached)", ours(fresh(), comps.unet, None)),
                ("ours: teacher + KD (cached)", ours(fresh(), comps.unet, cache)),
                ("ours: cached, bf16 teacher", ours(fresh(), teacher_bf16, cache))]
    if compile_rows:  # torch.compile of student and teacher forwards (train.compile=true); first calls compile
        from types import SimpleNamespace

        from prunefit.training.students import apply_speedups

        flags = SimpleNamespace(gradient_checkpointing=False, channels_last=False, compile=True,
                                teacher_dtype="float32")
        s_plain, s_ours, t_ours = fresh(), fresh(), copy.deepcopy(comps.unet)
        apply_speedups(s_plain, copy.deepcopy(comps.unet), flags)
        apply_speedups(s_ours, t_ours, flags)
        variants += [("reference: plain DDPM, compiled", plain(s_plain)),
                     ("ours: cached, compiled", ours(s_ours, t_ours, cache))]
    rows, base = [], None
    for name, step in variants:
        t = median_time(step, runs, warmup=3)
        base = base or t
        rows.append({"model": label, "batch": batch, "step": name, "ms": 1000 * t, "ratio": t / base})
    return rows


def sd21_like_cpu():
    """SD 2.1's UNet block structure (heads 5/10/20/20 scaled, linear projections, cross-attention 1024)
    at widths a CPU can train, with the toy world's VAE and text encoder replaced by tiny SD parts."""
    from prunefit.models.tiny import TinySDConfig, tiny_components

    cfg = TinySDConfig(unet_channels=(32, 64, 128, 128), layers_per_block=2, attention_heads=2, norm_groups=8,
                       cross_attention_dim=64, latent_size=16, vae_channels=(32, 64), text_hidden=64, text_layers=2,
                       text_heads=2)
    comps = tiny_components(cfg)
    comps.source = "sd21-structured (cpu scale)"
    return comps


def main() -> None:
    rows = []
    toy = load_components("toyworld")
    compile_rows = "--no-compile" not in sys.argv
    rows += measure(toy, "toy expert (0.8 MACs)", 16, 10, compile_rows)
    rows += measure(sd21_like_cpu(), "SD2.1-structured (cpu scale)", 8, 8)  # compile rows: toy only (CPU time)
    report("finetune_step", rows, {"target": "ours (cached) <= 1.0x plain uncached DDPM step (eager)",
                                   "ratio": "to the plain uncached DDPM step of the same model, same process"})


if __name__ == "__main__":
    main()
