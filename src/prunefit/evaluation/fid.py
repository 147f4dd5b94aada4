"""FID: feature networks, the Fréchet distance of each convention (``fid.mode``), the protocol that names them,
and reference statistics cached and checked by that protocol.

Modes: ``legacy_pytorch`` (the paper's: clean-fid 0.1.35's legacy_pytorch, i.e. pytorch-fid's FID Inception-v3 with
a float bilinear resize to 299 (``evaluation/fid_inception.py``) and clean-fid's scipy-sqrtm distance) and
``torchmetrics`` (torchmetrics' ``_compute_fid`` over the toy world's judge, a CLIP vision tower, or torch-fidelity's
Inception, an optional extra that needs torchvision). A ``FeatureNet`` carries its ``protocol`` (mode, features,
resolution, resize, weights, distance); it goes into results.json and into every reference statistics file (mean,
covariance, N), which a later evaluation under another protocol refuses.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from prunefit.errors import ConfigError, DataError, ModelLoadError
from prunefit.evaluation.configs import FidConfig
from prunefit.utils.io import atomic_file

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""A batch of prepared images [N, 3, S, S] -> float64 features [N, D] on the CPU."""
PrepareFn = Callable[[np.ndarray], torch.Tensor]
"""One HxWx3 uint8 image -> the network's per-image input [3, S, S]."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".npy")
PROTOCOL_KEYS = ("mode", "features", "resolution", "resize", "weights", "distance")
"""What reference statistics must share with an evaluation that uses them (and N, where fid.reference_n is set)."""


@dataclass
class FeatureNet:
    """A feature network ready to run: per-image preparation, the batch function and the protocol it implies."""

    prepare: PrepareFn
    fn: FeatureFn
    protocol: dict[str, Any]
    """mode, features, resolution, resize, weights, distance (PROTOCOL_KEYS)."""

    def distance(self, mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
        """The Fréchet distance of this net's mode."""
        legacy = self.protocol["mode"] == "legacy_pytorch"
        return (frechet_distance_legacy if legacy else frechet_distance)(mu1, sigma1, mu2, sigma2)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), via torchmetrics' implementation. [D], [D, D] x2, on the
    first set's device (reference statistics read from a file are on the CPU)."""
    from torchmetrics.image.fid import _compute_fid

    dev = mu1.device
    return float(_compute_fid(mu1.double(), sigma1.double(), mu2.to(dev).double(), sigma2.to(dev).double()))


def frechet_distance_legacy(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor,
                            eps: float = 1e-6) -> float:
    """clean-fid 0.1.35's ``frechet_distance`` (pytorch-fid's numerics): ``scipy.linalg.sqrtm(S1 @ S2)`` in float64;
    where it is not finite, again with ``eps`` added to both diagonals; an imaginary diagonal above 1e-3 is an
    error, a smaller one is dropped. [D], [D, D] x2 -> float. (clean-fid keeps the means in float32; we use
    float64 throughout.)"""
    from scipy import linalg

    m1, s1, m2, s2 = (t.detach().double().cpu().numpy() for t in (mu1, sigma1, mu2, sigma2))
    diff = m1 - m2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(f"FID: sqrtm(S1 S2) has an imaginary component of {np.max(np.abs(covmean.imag)):.3g} "
                            "(clean-fid refuses it too); use more images than feature dimensions")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2), in float64 (np.cov's convention)."""
    if features.shape[0] < 2:
        raise DataError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def fid_from_features(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """Fréchet distance (torchmetrics' math) between two feature sets [N1, D] and [N2, D]."""
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


def batched_features(paths: Sequence[Path], net: FeatureNet, batch_size: int = 64,
                     progress: Callable[[Iterable], Iterable] = iter) -> torch.Tensor:
    """Features [N, D] of N image files: each prepared on its own (``net.prepare``), then run in batches."""
    out = []
    for i in progress(range(0, len(paths), batch_size)):
        out.append(net.fn(torch.stack([net.prepare(load_image(p)) for p in paths[i : i + batch_size]])))
    return torch.cat(out)


def stats_key(paths: Sequence[Path], protocol: dict[str, Any]) -> str:
    """A short hash of the image files (name, size, mtime) and the protocol: the cache key of reference
    statistics."""
    h = hashlib.sha256(json.dumps({k: protocol.get(k) for k in PROTOCOL_KEYS}, sort_keys=True).encode())
    h.update(f"|{len(paths)}|".encode())
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


def check_stats_protocol(meta: dict, protocol: dict[str, Any], source: str, n: Optional[int] = None) -> None:
    """Refuse reference statistics made under another protocol (or, with ``n``, from another number of images)."""
    made = meta.get("protocol") or {}
    diff = [k for k in PROTOCOL_KEYS if made.get(k) != protocol.get(k)]
    if n is not None and meta.get("n") != n:
        diff.append("n")
    if diff:
        theirs = ", ".join(f"{k}={made.get(k, meta.get(k))!r}" for k in diff)
        ours = ", ".join(f"{k}={protocol.get(k, n)!r}" for k in diff)
        raise ConfigError(f"FID reference stats {source} were made with {theirs}, this evaluation uses {ours}; "
                          "recompute them with `prunefit evaluate fid-ref` under the same fid.* settings")


def reference_paths(folder: str, n: Optional[int]) -> list[Path]:
    """The reference images: all under ``folder`` (sorted), or the first ``n`` (an error if fewer)."""
    paths = images_in(Path(folder))
    if n is not None and len(paths) < n:
        raise DataError(f"fid.reference_n={n} but {folder} holds {len(paths)} images")
    return paths[:n] if n is not None else paths


def compute_reference_stats(folder: str, net: FeatureNet, cfg: FidConfig, output: Path,
                            progress: Callable[[Iterable], Iterable] = iter) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Statistics of the reference images under ``net``'s protocol, saved to ``output`` with that protocol."""
    paths = reference_paths(folder, cfg.reference_n)
    mu, sigma = feature_stats(batched_features(paths, net, cfg.batch_size, progress))
    meta = {"protocol": net.protocol, "n": len(paths), "source": str(folder)}
    save_stats(output, mu, sigma, meta)
    return mu, sigma, meta


def reference_stats(cfg: FidConfig, net: FeatureNet) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Reference statistics mu [D], sigma [D, D] and their metadata: a stats file (checked against ``net``'s
    protocol), or computed from reference_images and cached beside them under a protocol-keyed name."""
    if cfg.reference_images:
        paths = reference_paths(cfg.reference_images, cfg.reference_n)
        cache = Path(cfg.reference_stats) if cfg.reference_stats else \
            Path(cfg.reference_images) / f".fid-stats-{stats_key(paths, net.protocol)}.safetensors"
        if not cache.is_file():
            return compute_reference_stats(cfg.reference_images, net, cfg, cache)
        mu, sigma, meta = load_stats(cache)
    elif cfg.reference_stats:
        cache = Path(cfg.reference_stats)
        mu, sigma, meta = load_stats(cache)
    else:
        raise ConfigError("fid needs fid.reference_images or fid.reference_stats")
    check_stats_protocol(meta, net.protocol, str(cache), cfg.reference_n)
    return mu, sigma, meta


# ---------------------------------------------------------------- feature networks

def _pil_resize(size: int) -> PrepareFn:
    """torchmetrics mode's preparation: PIL bicubic to size x size (uint8) where the image differs."""
    def prepare(a: np.ndarray) -> torch.Tensor:
        if a.shape[0] != size or a.shape[1] != size:
            a = np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return prepare


def _torchmetrics_protocol(features: str, size: int, weights: str) -> dict[str, Any]:
    return {"mode": "torchmetrics", "features": features, "resolution": size,
            "resize": f"PIL bicubic to {size}x{size} (uint8) where the size differs", "weights": weights,
            "distance": "torchmetrics _compute_fid (eigenvalues of S1 S2, float64)"}


def judge_features(judge_dir: str | None = None) -> FeatureNet:
    """The toy world's judge (torchmetrics mode, 32 px)."""
    from prunefit.toyworld.judge import load_judge, to_judge_input
    from prunefit.toyworld.paths import judge_dir as default_judge_dir

    folder = Path(judge_dir) if judge_dir else default_judge_dir()
    judge = load_judge(folder)
    digest = hashlib.sha256((folder / "judge.safetensors").read_bytes()).hexdigest()[:16]
    return FeatureNet(_pil_resize(32), lambda x: judge.features(to_judge_input(x)).double(),
                      _torchmetrics_protocol("toyworld-judge", 32, f"judge.safetensors sha256 {digest}"))


def clip_features(model: str, device: str | torch.device = "cpu") -> FeatureNet:
    """A CLIP vision tower's projected image embedding (torchmetrics mode, 224 px), computed on ``device``
    (features come back to the CPU in float64: statistics as before, whatever the device)."""
    from prunefit.evaluation.clip import load_clip

    clip = load_clip(model, device)
    return FeatureNet(_pil_resize(224), lambda x: clip.image_embeds(x).double().cpu(),
                      _torchmetrics_protocol(f"clip:{model}", 224, model))


def inception_features(weights: str | None, device: str | torch.device = "cpu") -> FeatureNet:
    """torch-fidelity's FID Inception-v3 pool3 features (torchmetrics mode, optional extra), computed on ``device``
    and returned on the CPU in float64."""
    from prunefit.evaluation.fid_inception import weights_identity

    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception:
        raise ModelLoadError("fid.mode=torchmetrics with Inception needs torch-fidelity and torchvision: "
                             "pip install 'prunefit[fid-inception]', or use fid.mode=legacy_pytorch") from None
    if weights is not None and not Path(weights).is_file():
        raise ModelLoadError(f"Inception weights not found: {weights}")
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights).eval()
    net.to(device)
    ident = weights_identity(Path(weights)) if weights else "torch-fidelity weights-inception-2015-12-05-6726825d"
    return FeatureNet(_pil_resize(299), lambda x: net(x.to(device, torch.uint8))[0].double().cpu(),
                      _torchmetrics_protocol("inception-v3-compat (torch-fidelity)", 299, ident))


def legacy_inception_features(weights: str | None, device: str | torch.device = "cpu") -> FeatureNet:
    """pytorch-fid's FID Inception-v3 as clean-fid's legacy_pytorch mode runs it (``evaluation/fid_inception``),
    computed on ``device`` and returned on the CPU in float64."""
    from prunefit.evaluation import fid_inception as fi

    net, ident = fi.load_fid_inception(weights)
    net.to(device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(fi.legacy_pytorch_normalize(x.to(device))).double().cpu()

    protocol = {"mode": "legacy_pytorch", "features": "pytorch-fid FID Inception-v3 pool3 (2048-d)",
                "resolution": fi.INPUT_SIZE, "resize": fi.RESIZE, "weights": ident,
                "distance": "clean-fid 0.1.35 frechet_distance (scipy sqrtm, float64)"}
    return FeatureNet(fi.legacy_pytorch_resize, fn, protocol)


def feature_network(cfg: FidConfig, device: str | torch.device = "cpu") -> FeatureNet:
    """The feature network ``cfg`` names, on ``device`` (the toy judge stays on the CPU: it is a few hundred kB)."""
    if cfg.mode == "legacy_pytorch":
        return legacy_inception_features(cfg.weights, device)
    if cfg.features == "judge":
        return judge_features()
    if cfg.features == "clip":
        return clip_features(cfg.clip_model, device)
    return inception_features(cfg.weights, device)
