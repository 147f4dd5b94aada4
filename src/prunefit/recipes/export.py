"""``prunefit export``: write an expert (or each expert of a prune run) as a pipeline folder plain diffusers loads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from prunefit.pruning.export import export_folder


def main(src: str, output: str, base: Optional[str] = None) -> list[str]:
    """Export ``src`` (an expert folder, a run folder holding ``expert/``, or a prune run: one folder per expert,
    router not included) into ``output``; the console lines: each folder written and how to load it."""
    paths = export_folder(Path(src), Path(output), base)
    return [f"pipeline: {p}" for p in paths] + [
        "load: DiffusionPipeline.from_pretrained(PATH, trust_remote_code=True)  (no prunefit needed)"]
