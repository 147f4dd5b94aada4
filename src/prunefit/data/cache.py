"""Cache VAE latent distributions and text embeddings of a data source (``prunefit cache``).

A cache folder holds ``cache.safetensors`` (latent mean and std [N, 4, h, w], text states [N, L, C])
and ``cache.json`` (captions, model, source). Training uses it for samples 0..N-1 (cycling beyond N),
so a step runs no VAE encoder and no text encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from prunefit.errors import DataError
from prunefit.utils.io import atomic_file, atomic_write_json


@dataclass
class LatentCache:
    mean: torch.Tensor
    std: torch.Tensor
    text: torch.Tensor
    captions: list[str]
    meta: dict

    def __len__(self) -> int:
        return self.mean.shape[0]

    def samples(self, start: int, n: int):
        """Samples start .. start+n-1 (cycling): latent mean and std [n, 4, h, w], text states [n, L, C], captions."""
        idx = torch.arange(start, start + n) % len(self)
        return self.mean[idx], self.std[idx], self.text[idx], [self.captions[i] for i in idx.tolist()]


def build_cache(components, data, n: int, out: Path, batch_size: int = 64, meta: dict | None = None) -> Path:
    """Encode the first ``n`` samples of ``data`` (VAE latent mean and std [N, 4, h, w], text states [N, L, C]) into a
    cache folder ``out``; returns ``out``."""
    from prunefit.models.components import encode_prompts

    means, stds, texts, caps = [], [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc="cache", unit="batch"):
            images, captions = data.samples(start, min(batch_size, n - start))
            vae = components.vae
            dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
            texts.append(encode_prompts(components, captions).cpu())
            caps += captions
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "cache.safetensors") as tmp:
        save_file({"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous(),
                   "text": torch.cat(texts).contiguous()}, str(tmp))
        atomic_write_json(out / "cache.json", {"n": n, "captions": caps, **(meta or {})})
    return out


def read_cache_meta(path: str | Path, expected_model: str | None = None) -> dict:
    """A cache folder's cache.json, checked (DataError, one line): present, valid, made with ``expected_model``."""
    d = Path(path)
    if not (d / "cache.safetensors").is_file():
        raise DataError(f"no latent cache at {d}; create one with `prunefit cache`")
    try:
        meta = json.loads((d / "cache.json").read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("captions"), list):
            raise ValueError("no captions list")
    except (OSError, ValueError) as exc:
        raise DataError(f"{d / 'cache.json'} is missing or corrupt ({str(exc)[:80]}); rebuild the cache with "
                        "`prunefit cache`") from None
    if expected_model is not None and meta.get("model") not in (None, expected_model):
        raise DataError(f"cache {d} was made with model {meta.get('model')!r}, not {expected_model!r}; "
                        "rebuild it for this model or drop cache_dir")
    return meta


def load_cache(path: str | Path, expected_model: str | None = None) -> LatentCache:
    """Read a cache folder (checked against ``expected_model``) into a ``LatentCache``."""
    d = Path(path)
    meta = read_cache_meta(d, expected_model)
    try:
        t = load_file(str(d / "cache.safetensors"))
    except Exception as exc:
        raise DataError(f"cannot read {d / 'cache.safetensors'} ({str(exc).splitlines()[0][:100]}); rebuild the "
                        "cache with `prunefit cache`") from None
    if len(t.get("mean", ())) != len(meta["captions"]) or len(t.get("text", ())) != len(meta["captions"]):
        raise DataError(f"cache {d}: cache.safetensors and cache.json disagree on the sample count; rebuild it")
    return LatentCache(t["mean"], t["std"], t["text"], meta.pop("captions"), meta)
