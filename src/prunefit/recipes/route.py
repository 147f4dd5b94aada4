"""``prunefit route``: assign prompts to experts with a trained APTP router and save the assignment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from prunefit.data.prompts import PromptRecord, read_prompt_file
from prunefit.errors import ModelLoadError
from prunefit.models.components import load_components


def load_routing(prune_dir: Path, device: str = "cpu", dtype: str = "float32"):
    """(components of the source model in ``dtype``, router, encoder, meta) for a `prunefit prune` output folder."""
    from prunefit.pruning.encoder import SentenceEncoder
    from prunefit.pruning.router import load_router

    meta_file = prune_dir / "router" / "router.json"
    if not meta_file.is_file():
        raise ModelLoadError(f"{prune_dir} has no router/ (was it pruned with method=aptp?)")
    meta = json.loads(meta_file.read_text())
    comps = load_components(meta["source_model"], dtype, device)
    router, meta = load_router(prune_dir / "router", comps.unet)
    return comps, router, SentenceEncoder(meta["encoder"], device), meta


def assign(router, encoder, records: list[PromptRecord], batch_size: int = 256) -> list[int]:
    """Expert id per prompt (deterministic: independent of batch size and position)."""
    ids: list[int] = []
    for i in range(0, len(records), batch_size):
        z = encoder([r.prompt for r in records[i : i + batch_size]])
        ids += router.route(z).tolist()
    return ids


def route_file(prune_dir: Path, prompt_file: str, output: Path, fmt: str = "auto") -> tuple[Path, list[int]]:
    records = read_prompt_file(prompt_file, fmt=fmt)
    _, router, encoder, _ = load_routing(prune_dir)
    ids = assign(router, encoder, records)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "expert": e}) + "\n"
                           for r, e in zip(records, ids)))
    os.replace(tmp, output)
    return output, torch.bincount(torch.tensor(ids), minlength=router.num_experts).tolist()
