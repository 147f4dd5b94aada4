"""Export an expert as a pipeline folder plain diffusers loads (``trust_remote_code=True``), without prunefit.

The folder is the base model's pipeline (``save_pretrained`` of its text encoder, tokenizer, VAE and scheduler, plus
its ``prunefit.json``) whose ``unet/`` holds the expert's weights, ``pruned_unet.py`` (a verbatim copy of
``prunefit/pruning/pruned_unet.py``: torch + diffusers only), a ``config.json`` = the base UNet config +
``pruned_layers`` (per-layer widths and removed blocks, read off the materialized expert) and the expert's
``expert.json`` for provenance. ``model_index.json`` names the custom component: ``"unet": ["pruned_unet",
"PrunedUNet2DConditionModel"]``, which diffusers imports from the component's folder when the caller passes
``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from torch import nn

from prunefit.errors import ModelLoadError
from prunefit.models.components import load_components, save_pipeline
from prunefit.pruning import pruned_unet
from prunefit.pruning.expert import load_expert
from prunefit.pruning.kinds import SkipResnet, SkipTransformer
from prunefit.utils.io import atomic_folder

MODULE = "pruned_unet"
CLASS = "PrunedUNet2DConditionModel"


def pruned_layers(unet: nn.Module) -> dict[str, dict]:
    """{module path: entry} of a materialized expert: every resnet's, attention's and GEGLU feed-forward's width,
    every removed block (the entries ``pruned_unet.apply_pruned_layers`` rebuilds)."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    out: dict[str, dict] = {}
    for name, m in unet.named_modules():
        if isinstance(m, SkipResnet):
            out[name] = {"kind": "skip_resnet", "out_channels": m.out_channels}
        elif isinstance(m, SkipTransformer):
            out[name] = {"kind": "skip_transformer"}
        elif isinstance(m, ResnetBlock2D):
            out[name] = {"kind": "resnet", "channels": m.conv1.out_channels, "groups": m.norm2.num_groups}
        elif isinstance(m, Attention):
            out[name] = {"kind": "attention", "heads": m.heads, "inner_dim": m.to_q.out_features}
        elif isinstance(m, FeedForward):
            out[name] = {"kind": "ffn", "inner_dim": m.net[2].in_features}
    return out


def _write_unet(folder: Path, unet: nn.Module, expert_dir: Path, base_config: dict) -> None:
    """Replace the stock ``unet/config.json`` with the pruned one and add the loader module and provenance."""
    import diffusers

    config = {"_class_name": CLASS, "_diffusers_version": diffusers.__version__, **base_config,
              "pruned_layers": pruned_layers(unet)}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    shutil.copyfile(pruned_unet.__file__, folder / f"{MODULE}.py")
    shutil.copyfile(expert_dir / "expert.json", folder / "expert.json")
    index = folder.parent / "model_index.json"
    doc = json.loads(index.read_text())
    doc["unet"] = [MODULE, CLASS]
    index.write_text(json.dumps(doc, indent=2) + "\n")


def export_expert(expert_dir: str | Path, out: str | Path, base: Optional[str] = None) -> Path:
    """Write ``out``: the base pipeline (``base``, default the expert's source model) with the expert as its UNet,
    loadable by ``DiffusionPipeline.from_pretrained(out, trust_remote_code=True)``; a model card beside it."""
    from prunefit.models.card import write_card

    expert_dir = Path(expert_dir)
    unet, info = load_expert(expert_dir)
    comps = load_components(base or info.source_model)
    if comps.unet.config.get("in_channels") != info.base_config.get("in_channels") or \
            comps.unet.config.get("block_out_channels") and \
            list(comps.unet.config["block_out_channels"]) != list(info.base_config["block_out_channels"]):
        raise ModelLoadError(f"{base or info.source_model} is not the model expert {expert_dir} was pruned from "
                             f"({info.source_model}); pass its pipeline folder with --base")
    with atomic_folder(Path(out), replace=True) as tmp:  # all or nothing: a half-written export never loads
        save_pipeline(comps.with_unet(unet), tmp)
        _write_unet(tmp / "unet", unet, expert_dir, info.base_config)
        write_card(tmp)
    return Path(out)


def export_folder(src: str | Path, out: str | Path, base: Optional[str] = None) -> list[Path]:
    """Export an expert folder, a run folder holding ``expert/``, or a ``prunefit prune`` folder (``experts/*``:
    one pipeline folder per expert, ``out/expert-k``; the router is not exported). Returns the folders written."""
    src = Path(src)
    if (src / "expert.json").is_file():
        return [export_expert(src, out, base)]
    if (src / "expert" / "expert.json").is_file():
        return [export_expert(src / "expert", out, base)]
    experts = sorted(p.parent for p in (src / "experts").glob("*/expert.json"))
    if not experts:
        raise ModelLoadError(f"{src} holds no expert (expert.json, expert/ or experts/*/); pass an expert folder or "
                             "a `prunefit prune` output folder")
    return [export_expert(e, Path(out) / e.name, base) for e in experts]
