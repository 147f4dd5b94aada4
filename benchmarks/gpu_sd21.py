"""GPU benchmark (prepared for H100/H200; finishes in a few minutes): the SD 2.1 UNet built from its config
(random weights, bf16, 512 px, 77 text tokens), measuring at batch 8:
  1. a plain diffusers-style training step of an 80%-MAC expert (student forward/backward + AdamW),
  2. our distillation step (teacher forward no_grad + student forward/backward + output/feature KD + AdamW),
     with peak memory (target: fits in 40 GB),
  3. UNet forward latency of the expert vs the dense model (the generation cost per denoising step).
Writes benchmarks/results/gpu_sd21.json. Usage: python benchmarks/gpu_sd21.py
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, report  # noqa: E402

from prunefit.losses.distillation import feature_kd, output_kd  # noqa: E402
from prunefit.models.features import capture_features  # noqa: E402
from prunefit.pruning.baselines import magnitude_scores, prune_to_target  # noqa: E402
from prunefit.pruning.macs import mac_model  # noqa: E402
from prunefit.pruning.materialize import materialize  # noqa: E402
from prunefit.pruning.spec import gate_spec  # noqa: E402

SD21 = {"attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True, "sample_size": 96, "layers_per_block": 2, "norm_num_groups": 32}


def main() -> None:
    from diffusers import UNet2DConditionModel

    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    dev, dt, batch, lat = "cuda", torch.bfloat16, 8, 64  # 512 px -> 64x64 latents
    torch.manual_seed(0)
    teacher = UNet2DConditionModel.from_config(SD21).to(dev)
    spec = gate_spec(teacher)
    macs = mac_model(teacher, spec, lat, 77)
    arch = prune_to_target(spec, macs, magnitude_scores(teacher, spec), 0.8)
    student = copy.deepcopy(teacher)
    materialize(student, spec, arch)
    mac_ratio = float(macs.ratio(arch.unsqueeze(0)))
    teacher = teacher.to(dt).eval().requires_grad_(False)
    student = student.to(dt).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-6, fused=True)
    x = torch.randn(batch, 4, lat, lat, device=dev, dtype=dt)
    t = torch.randint(0, 1000, (batch,), device=dev)
    c = torch.randn(batch, 77, 1024, device=dev, dtype=dt)

    def plain():
        loss = torch.nn.functional.mse_loss(student(x, t, c).sample.float(), x.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ours():
        with torch.no_grad(), capture_features(teacher) as ft:
            out_t = teacher(x, t, c).sample
        with capture_features(student) as fs:
            out_s = student(x, t, c).sample
        loss = torch.nn.functional.mse_loss(out_s.float(), x.float()) + 2 * output_kd(out_s, out_t) \
            + 0.1 * feature_kd(list(fs), list(ft))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = []
    for name, fn in (("plain DDPM step (expert)", plain), ("distillation step (teacher + KD)", ours)):
        torch.cuda.reset_peak_memory_stats()
        s = median_time(fn, runs=10, warmup=3)
        rows.append({"what": name, "batch": batch, "ms": 1000 * s, "samples_per_s": batch / s,
                     "peak_gb": torch.cuda.max_memory_allocated() / 2**30})
    with torch.inference_mode():
        student.eval()
        for b in (1, 8):
            xb, tb, cb = x[:b].repeat(1, 1, 1, 1), t[:b], c[:b]
            td = median_time(lambda: teacher(torch.cat([xb, xb]), torch.cat([tb, tb]), torch.cat([cb, cb])), 20, 3)
            te = median_time(lambda: student(torch.cat([xb, xb]), torch.cat([tb, tb]), torch.cat([cb, cb])), 20, 3)
            rows.append({"what": f"UNet forward with CFG, batch {b}: expert/dense", "batch": b, "ms": 1000 * te,
                         "samples_per_s": td / te, "peak_gb": mac_ratio})
    report("gpu_sd21", rows, {"mac_ratio": mac_ratio, "dtype": "bf16", "resolution": 512,
                              "note": "rows 3-4: samples_per_s = dense/expert speed-up, peak_gb = MAC ratio"})


if __name__ == "__main__":
    main()
