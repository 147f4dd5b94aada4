"""Model cost: UNet multiply-accumulates through ``FlopCounterMode`` and latency (warm-up, median of N)."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from prunefit.models.inputs import unet_inputs


def _register_cpu_sdpa() -> None:
    """torch's FlopCounterMode counts the CUDA attention kernels but not the CPU flash kernel that
    ``scaled_dot_product_attention`` dispatches to on CPU, so attention silently counted 0 there."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op, get_raw=True)
    def _cpu_sdpa_flop(query, key, value, *args, out_val=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


_register_cpu_sdpa()


def count_macs(unet, latent_size: int, text_length: int, batch: int = 1) -> int:
    """MACs of one UNet forward (FLOPs / 2 as counted by torch's FlopCounterMode)."""
    sample, t, text = unet_inputs(unet, batch, latent_size, text_length, next(unet.parameters()).dtype,
                                  next(unet.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, t, text)
    return int(counter.get_total_flops() // 2)


def device_name(device: torch.device) -> str:
    """``device`` as a results file records it: ``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def measure_latency(unet, latent_size: int, text_length: int, batch: int, runs: int = 20, warmup: int = 3) -> dict:
    """Median / min / max wall seconds of a UNet forward at ``batch`` on the UNet's device (``warmup`` untimed runs
    first; on CUDA each timing is bracketed by a synchronize of that device, so it measures the kernels, not their
    launch)."""
    p = next(unet.parameters())
    sample, t, text = unet_inputs(unet, batch, latent_size, text_length, p.dtype, p.device)
    sync = (lambda: torch.cuda.synchronize(p.device)) if p.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            unet(sample, t, text)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}
