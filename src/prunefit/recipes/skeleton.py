"""``prunefit dev skeleton``: write a full-size random-weight SD pipeline folder (sd15, sd21, sd21-base)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prunefit.models.skeleton import build_skeleton


@dataclass(frozen=True)
class SkeletonResult:
    """The folder written, its architecture, seed, on-disk size and build time."""

    path: Path
    arch: str
    seed: int
    bytes_on_disk: int
    seconds: float

    def lines(self) -> list[str]:
        """What was built and how to use it, for the console."""
        return [f"{self.arch} skeleton (random weights, seed {self.seed}): {self.path} "
                f"({self.bytes_on_disk / 1e9:.2f} GB, {self.seconds:.0f} s); use it as model={self.path}"]


def main(arch: str, out_dir: str | Path, seed: int = 0) -> SkeletonResult:
    """Build the ``arch`` skeleton into ``out_dir`` (refuses a non-empty folder) and describe it."""
    t0 = time.perf_counter()
    path = build_skeleton(arch, out_dir, seed=seed)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return SkeletonResult(path=path, arch=arch, seed=seed, bytes_on_disk=size, seconds=time.perf_counter() - t0)
