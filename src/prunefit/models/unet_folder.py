"""Recognise, check and load a plain diffusers ``UNet2DConditionModel`` folder (e.g. a BK-SDM student's ``unet/``).

Such a folder holds ``config.json`` (``"_class_name": "UNet2DConditionModel"``) beside
``diffusion_pytorch_model.safetensors`` (or ``.bin``), as ``save_pretrained`` writes it. Any UNet of that class can be a
student of a teacher whose latents and text states it shares: same ``in_channels``, ``out_channels`` and
``cross_attention_dim`` (its depth and widths are free, so BK-SDM's block-removed UNets qualify).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from prunefit.errors import ModelLoadError

CLASS = "UNet2DConditionModel"
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_SHARED = ("in_channels", "out_channels", "cross_attention_dim")


def _config(path: Path) -> Optional[dict]:
    try:
        doc = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def is_unet_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a ``UNet2DConditionModel`` config.json and a weights file beside it."""
    p = Path(path)
    doc = _config(p) if p.is_dir() else None
    return doc is not None and doc.get("_class_name") == CLASS and any((p / w).is_file() for w in WEIGHTS)


def check_unet_folder(path: str | Path, base_config: Optional[dict] = None) -> dict:
    """The folder's config (ModelLoadError, one line, unless it is a readable UNet folder whose latents and text states
    match ``base_config``'s, when given). Reads JSON and the safetensors header only."""
    p = Path(path)
    if not is_unet_folder(p):
        raise ModelLoadError(f"{path} is not a diffusers UNet folder (config.json with _class_name {CLASS} and "
                             f"{WEIGHTS[0]})")
    doc = _config(p) or {}
    weights = p / WEIGHTS[0]
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as exc:
            raise ModelLoadError(f"cannot read {weights} ({str(exc).splitlines()[0][:120]}); the file is "
                                 "corrupt") from None
    if base_config is not None:
        off = [k for k in _SHARED if k in doc and _norm(doc[k]) != _norm(base_config.get(k))]
        if off:
            k = off[0]
            raise ModelLoadError(f"UNet {path} has {k}={doc[k]} but the teacher's UNet has {base_config.get(k)}; a "
                                 "student must share the teacher's latents and text encoder")
    return doc


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def load_unet_folder(path: str | Path, base_config: Optional[dict] = None, dtype: torch.dtype = torch.float32):
    """The UNet of a plain diffusers UNet folder, in eval mode, checked against ``base_config`` (the teacher's)."""
    from diffusers import UNet2DConditionModel

    check_unet_folder(path, base_config)
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    except Exception as exc:  # diffusers raises several types; the message says what is wrong
        raise ModelLoadError(f"cannot load UNet folder {path} ({str(exc).splitlines()[0][:160]})") from None
    return unet.eval()
