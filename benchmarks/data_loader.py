"""Images/s of the training data path: serial ``samples`` vs ``Prefetcher`` with 1 and 2 DataLoader workers.

Two sources: the toy world at its native 32 px (rendered), and an image-caption folder of 256 generated 512x512
JPEGs decoded, centre-cropped and resized to 256 px; the same folder is also read as a Hugging Face imagefolder
(``data.source=hf``, when ``datasets`` is installed), its ``vs_folder`` the images/s over the folder source's. Each
is read as the training loop reads it (consecutive batches ``(k * batch, batch)``), once with nothing else to do
("data only") and once with a simulated accelerator step of fixed length after each batch (a sleep: the process
waits on the GPU while workers keep decoding), which is where prefetching pays. The first batches (misses, worker
start-up) are warm-up and not timed; every prefetched batch is checked to equal the serial one bit for bit. Ratios
are to the serial path of the same source and scenario, measured in the same process (best of two interleaved
rounds). Torch threads are set to 1 and recorded.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from prunefit.data.datasets import ToyWorldData, image_caption_folder  # noqa: E402
from prunefit.data.loader import Prefetcher  # noqa: E402

WARMUP = 4
"""Batches read before timing: three misses start the chain, the fourth waits for the workers' start-up."""


def jpeg_folder(root: Path, n: int = 256, size: int = 512) -> Path:
    """``n`` smooth-plus-noise ``size`` px JPEGs (photo-like file sizes) with captions, in ``root``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n):
        base = np.stack([np.sin(6 * (xx * rng.random() + yy * rng.random()) + rng.random() * 6) for _ in range(3)], -1)
        img = np.clip(127 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:04d}.jpg", quality=90)
        rows.append(f'{{"file_name": "{i:04d}.jpg", "text": "image {i}"}}')
    (root / "metadata.jsonl").write_text("\n".join(rows))
    return root


def read(source, batch: int, batches: int, step_s: float) -> tuple[float, list]:
    """Seconds for ``batches`` consecutive batches after the warm-up (each followed by ``step_s`` of waiting)."""
    out = []
    for k in range(WARMUP):
        source.samples(k * batch, batch)
    t0 = time.perf_counter()
    for k in range(WARMUP, WARMUP + batches):
        out.append(source.samples(k * batch, batch))
        if step_s:
            time.sleep(step_s)
    return time.perf_counter() - t0, out


def measure(label: str, make, batch: int, batches: int, step_ms: float, rounds: int = 2) -> list[dict]:
    """One row per worker count: the best of ``rounds`` interleaved runs (the machine is shared)."""
    best: dict[int, float] = {}
    hits: dict[int, int] = {}
    serial = None
    for _ in range(rounds):
        for workers in (0, 1, 2):
            data = make()
            source = Prefetcher(data, workers) if workers else data
            seconds, out = read(source, batch, batches, step_ms / 1000)
            if workers:
                source.close()
                same = all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(out, serial))
                assert same, f"{label}: {workers} workers gave other batches than the serial path"
            else:
                serial = out
            best[workers] = min(seconds, best.get(workers, seconds))
            hits[workers] = getattr(source, "hits", 0)
    rows = []
    for workers, seconds in best.items():
        rows.append({"data": label, "batch": batch, "step_ms": step_ms, "workers": workers,
                     "images_per_s": batch * batches / seconds, "ms_per_batch": 1000 * seconds / batches,
                     "ratio": best[0] / seconds, "hits": hits[workers]})
    return rows


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    toy = lambda: ToyWorldData(seed=0)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as hf_cache:
        t0 = time.perf_counter()
        folder = jpeg_folder(Path(tmp))
        made_s = time.perf_counter() - t0
        images = lambda: image_caption_folder(folder, resolution=256, seed=0)  # noqa: E731
        hf = None
        try:
            import datasets

            from prunefit.data.datasets import hf_dataset

            datasets.config.HF_DATASETS_CACHE = hf_cache  # outside the image folder, which imagefolder scans
            hf = lambda: hf_dataset(str(folder), resolution=256, seed=0)  # noqa: E731
        except ImportError:
            pass
        for step_ms in (0.0, 100.0):
            rows += measure("toyworld 32px", toy, 64, 24, step_ms)
            rows += (folder_rows := measure("folder 512px jpeg -> 256px", images, 16, 12, step_ms))
            if hf is not None:
                hf_rows = measure("hf imagefolder, same files", hf, 16, 12, step_ms)
                for r, f in zip(hf_rows, folder_rows):
                    r["vs_folder"] = r["images_per_s"] / f["images_per_s"]
                rows += hf_rows
    for r in rows:
        r.setdefault("vs_folder", 1.0 if r["data"].startswith("folder") else "-")
    report("data_loader", rows, {
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "generate_jpegs_s": made_s,
        "ratio": "images/s over the serial path (workers 0) of the same source and step, same process; "
                 "each row the best of 2 interleaved rounds",
        "vs_folder": "hf rows: images/s over the folder source's row with the same workers and step (same files)",
        "step_ms": "simulated accelerator step after each batch (a sleep); 0 = the data path alone",
        "note": "2 CPU cores shared with other agents' jobs: the workers compete with the main process and "
                "with other load, so absolute numbers are noisy; with a real GPU step the main process is idle "
                "while it waits, as in the step_ms rows"})


if __name__ == "__main__":
    main()
