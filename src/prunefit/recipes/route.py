"""``prunefit route``: assign prompts to experts with a trained APTP router and save the assignment."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prunefit.data.prompts import read_prompt_file
from prunefit.pruning.routing import assign, load_routing
from prunefit.utils.io import atomic_write_text


def route_file(prune_dir: Path, prompt_file: str, output: Path, fmt: str = "auto") -> tuple[Path, list[int]]:
    """Route every prompt of ``prompt_file`` and write ``output`` (JSONL: id, prompt, expert); returns the loads."""
    records = read_prompt_file(prompt_file, fmt=fmt)
    _, router, encoder, _ = load_routing(prune_dir)
    ids = assign(router, encoder, records)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, "".join(json.dumps({"id": r.id, "prompt": r.prompt, "expert": e}) + "\n"
                                      for r, e in zip(records, ids)))
    return output, torch.bincount(torch.tensor(ids), minlength=router.num_experts).tolist()


def main(prune_dir: Path, prompt_file: str, output: Path, fmt: str = "auto") -> list[str]:
    """``prunefit route``: route the prompts (``route_file``); the console lines: each expert's load, the routes."""
    out, loads = route_file(Path(prune_dir), prompt_file, Path(output), fmt)
    return [f"expert loads: {loads}", f"routes: {out}"]
