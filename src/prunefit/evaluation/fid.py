"""Fréchet distance over pluggable features (torchmetrics' FID math), and cached reference statistics.

Feature networks: ``judge`` (the toy world's judge), ``clip`` (a local or hub CLIP vision tower),
``inception`` (the standard FID Inception-v3 through torch-fidelity, from a local weights file or a
download on machines with internet; needs torchvision, so it is an optional extra).
Reference statistics (mean, covariance, N, feature network) are computed once per image folder and
saved as safetensors, so each evaluation only extracts features of the generated images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from prunefit.errors import DataError, ModelLoadError
from prunefit.utils.io import atomic_file

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images [N, 3, H, W] -> float64 features [N, D]."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".npy")


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), via torchmetrics' implementation. [D], [D, D] x2, on the
    first set's device (reference statistics read from a file are on the CPU)."""
    from torchmetrics.image.fid import _compute_fid

    dev = mu1.device
    return float(_compute_fid(mu1.double(), sigma1.double(), mu2.to(dev).double(), sigma2.to(dev).double()))


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2)."""
    if features.shape[0] < 2:
        raise DataError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def fid_from_features(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """Fréchet distance between two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*feature_stats(gen), *feature_stats(ref))


def load_image(path: Path) -> np.ndarray:
    """An image file (or a uint8 HxWx3 .npy, as the official code saves) as an HxWx3 uint8 array."""
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types for truncated / corrupt files
        raise DataError(f"cannot read image {path}: {exc}") from None
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(f"image {path} has shape {arr.shape}; expected HxWx3")
    return arr.astype(np.uint8)


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted (an error if none)."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def batched_features(paths: Sequence[Path], feature_fn: FeatureFn, size: int, batch_size: int = 64,
                     progress: Callable[[Iterable], Iterable] = iter) -> torch.Tensor:
    """Features [N, D] of N image files, each resized to ``size`` x ``size`` (bicubic, as PIL) before extraction."""
    out = []
    for i in progress(range(0, len(paths), batch_size)):
        arrs = []
        for p in paths[i : i + batch_size]:
            a = load_image(p)
            if a.shape[0] != size or a.shape[1] != size:
                a = np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))
            arrs.append(a)
        out.append(feature_fn(torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)))
    return torch.cat(out)


def stats_key(paths: Sequence[Path], extractor: str, size: int) -> str:
    """A short hash of the image files (name, size, mtime), feature network and size: the cache key of reference
    statistics."""
    h = hashlib.sha256(f"{extractor}|{size}|".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}|".encode())
    return h.hexdigest()[:16]


def save_stats(path: Path, mu: torch.Tensor, sigma: torch.Tensor, meta: dict) -> None:
    """Write reference statistics mu [D], sigma [D, D] and ``meta`` to a safetensors file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        save_file({"mu": mu.contiguous(), "sigma": sigma.contiguous()}, str(tmp), metadata={"meta": json.dumps(meta)})


def load_stats(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read reference statistics: mu [D], sigma [D, D] and their metadata."""
    if not path.is_file():
        raise DataError(f"FID reference statistics not found: {path}; "
                        "create them with `prunefit evaluate fid-ref --images DIR`")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata().get("meta", "{}"))
    t = load_file(str(path))
    return t["mu"], t["sigma"], meta


# ---------------------------------------------------------------- feature networks

def judge_features(judge_dir: str | None = None) -> tuple[FeatureFn, int, str]:
    """(feature fn, input size, name) for the toy world's judge."""
    from prunefit.toyworld.judge import load_judge, to_judge_input
    from prunefit.toyworld.paths import judge_dir as default_judge_dir

    judge = load_judge(judge_dir or default_judge_dir())
    return (lambda x: judge.features(to_judge_input(x)).double()), 32, "toyworld-judge"


def clip_features(model: str, device: str | torch.device = "cpu") -> tuple[FeatureFn, int, str]:
    """(feature fn, 224, name) from a CLIP vision tower's projected image embedding, computed on ``device``
    (features come back to the CPU in float64: statistics as before, whatever the device)."""
    from prunefit.evaluation.clip import load_clip

    clip = load_clip(model, device)
    return (lambda x: clip.image_embeds(x).double().cpu()), 224, f"clip:{model}"


def inception_features(weights: str | None, device: str | torch.device = "cpu") -> tuple[FeatureFn, int, str]:
    """(feature fn, 299, name): the FID Inception-v3 pool3 features via torch-fidelity (optional extra), computed
    on ``device`` and returned on the CPU in float64."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception:
        raise ModelLoadError("Inception FID needs torch-fidelity and torchvision: "
                             "pip install 'prunefit[fid-inception]' (or use fid.features=judge / clip)") from None
    if weights is not None and not Path(weights).is_file():
        raise ModelLoadError(f"Inception weights not found: {weights}")
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights).eval()
    net.to(device)
    return ((lambda x: net(x.to(device, torch.uint8))[0].double().cpu()), 299,
            "inception-v3-compat(torch-fidelity)")
