"""``prunefit route``: assign prompts to experts with a trained APTP router and save the assignment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from prunefit.data.prompts import read_prompt_file
from prunefit.pruning.routing import assign, load_routing


def route_file(prune_dir: Path, prompt_file: str, output: Path, fmt: str = "auto") -> tuple[Path, list[int]]:
    """Route every prompt of ``prompt_file`` and write ``output`` (JSONL: id, prompt, expert); returns the loads."""
    records = read_prompt_file(prompt_file, fmt=fmt)
    _, router, encoder, _ = load_routing(prune_dir)
    ids = assign(router, encoder, records)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "expert": e}) + "\n"
                           for r, e in zip(records, ids)))
    os.replace(tmp, output)
    return output, torch.bincount(torch.tensor(ids), minlength=router.num_experts).tolist()
