"""Route prompts to experts with a `prunefit prune` folder's trained APTP router (deterministic per prompt)."""

from __future__ import annotations

import json
from pathlib import Path

from prunefit.data.prompts import PromptRecord
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



def expert_unet(prune_dir: Path, k: int, components):
    """Expert ``k``'s UNet of a `prunefit prune` folder, over ``components``' UNet config and dtype."""
    from prunefit.pruning.expert import load_expert

    unet, _ = load_expert(prune_dir / "experts" / f"expert-{k}", components.unet.config, components.unet.dtype)
    return unet
