"""Cache VAE latent distributions and text embeddings of a data source (``prunefit cache``).

A cache folder holds the latent mean and std [N, 4, h, w] and text states [N, L, C], either sharded
(``shard-00000.safetensors``, ... of ``shard_size`` samples each, read lazily: only the rows a batch asks
for leave the disk, so a cache far larger than RAM works and each rank reads only its own rows) or, in the
older format, as one ``cache.safetensors`` loaded into RAM; plus ``cache.json`` (captions, model, source,
and the shard index). Training uses it for samples 0..N-1 (cycling beyond N), so a step runs no VAE
encoder and no text encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
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


class ShardedLatentCache:
    """A sharded cache folder read lazily: ``samples(start, n)`` opens (once, memory-mapped) only the shards holding
    those rows and reads only those rows; same results as ``LatentCache`` on the same samples."""

    def __init__(self, folder: Path, shards: list[dict], shard_size: int, captions: list[str], meta: dict) -> None:
        self.folder, self.shards, self.shard_size = Path(folder), shards, shard_size
        self.captions, self.meta = captions, meta
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.captions)

    def __getstate__(self) -> dict:  # open shard handles stay in their process
        return {**self.__dict__, "_open": {}}

    def _shard(self, k: int):
        if k not in self._open:
            path = self.folder / self.shards[k]["file"]
            try:
                self._open[k] = safe_open(str(path), framework="pt")
            except Exception as exc:
                raise DataError(f"cannot read {path} ({str(exc).splitlines()[0][:100] if str(exc) else exc!r}); "
                                "rebuild the cache with `prunefit cache`") from None
        return self._open[k]

    def samples(self, start: int, n: int):
        """Samples start .. start+n-1 (cycling): latent mean and std [n, 4, h, w], text states [n, L, C], captions."""
        idx = [i % len(self) for i in range(start, start + n)]
        runs: list[tuple[int, int, int]] = []  # (shard, first row in it, rows) of consecutive rows
        for i in idx:
            k, r = divmod(i, self.shard_size)
            if runs and runs[-1][0] == k and runs[-1][1] + runs[-1][2] == r:
                runs[-1] = (k, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((k, r, 1))
        out = {name: torch.cat([self._shard(k).get_slice(name)[r:r + m] for k, r, m in runs])
               for name in ("mean", "std", "text")}
        return out["mean"], out["std"], out["text"], [self.captions[i] for i in idx]


def build_cache(components, data, n: int, out: Path, batch_size: int = 64, meta: dict | None = None,
                shard_size: int | None = None) -> Path:
    """Encode the first ``n`` samples of ``data`` (VAE latent mean and std [N, 4, h, w], text states [N, L, C]) into a
    cache folder ``out``; returns ``out``. ``shard_size`` samples per shard file, each written as it fills (RAM holds
    about one shard); None writes the older single ``cache.safetensors``, loaded whole into RAM."""
    from prunefit.models.components import encode_prompts

    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[torch.Tensor]] = {"mean": [], "std": [], "text": []}
    caps: list[str] = []
    shards: list[dict] = []

    def flush(rows: int) -> None:
        """Write the first ``rows`` buffered samples as the next shard."""
        whole = {k: torch.cat(v) for k, v in parts.items()}
        name = f"shard-{len(shards):05d}.safetensors"
        with atomic_file(out / name) as tmp:
            save_file({k: v[:rows].contiguous() for k, v in whole.items()}, str(tmp))
        shards.append({"file": name, "start": len(shards) * shard_size, "n": rows})
        for k, v in whole.items():
            parts[k] = [v[rows:]] if len(v) > rows else []

    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc="cache", unit="batch"):
            images, captions = data.samples(start, min(batch_size, n - start))
            vae = components.vae
            dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
            parts["mean"].append(dist.mean.cpu())
            parts["std"].append(dist.std.cpu())
            parts["text"].append(encode_prompts(components, captions).cpu())
            caps += captions
            while shard_size is not None and sum(len(t) for t in parts["mean"]) >= shard_size:
                flush(shard_size)
    if shard_size is None:
        with atomic_file(out / "cache.safetensors") as tmp:
            save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, str(tmp))
            atomic_write_json(out / "cache.json", {"n": n, "captions": caps, **(meta or {})})
        return out
    if parts["mean"]:
        flush(sum(len(t) for t in parts["mean"]))
    atomic_write_json(out / "cache.json", {"n": n, "captions": caps, **(meta or {}), "shard_size": shard_size,
                                           "shards": shards})
    return out


def read_cache_meta(path: str | Path, expected_model: str | None = None) -> dict:
    """A cache folder's cache.json, checked (DataError, one line): present, valid, made with ``expected_model``."""
    d = Path(path)
    if not (d / "cache.safetensors").is_file() and not (d / "shard-00000.safetensors").is_file():
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


def load_cache(path: str | Path, expected_model: str | None = None) -> LatentCache | ShardedLatentCache:
    """Open a cache folder (checked against ``expected_model``): a sharded one lazily (``ShardedLatentCache``), a
    single-file one into RAM (``LatentCache``)."""
    d = Path(path)
    meta = read_cache_meta(d, expected_model)
    if "shards" in meta:
        shards, size = meta.pop("shards"), meta.pop("shard_size")
        if sum(s["n"] for s in shards) != len(meta["captions"]) or not all((d / s["file"]).is_file() for s in shards):
            raise DataError(f"cache {d}: its shards and cache.json disagree (a shard is missing or the sample count "
                            "differs); rebuild it with `prunefit cache`")
        return ShardedLatentCache(d, shards, size, meta.pop("captions"), meta)
    try:
        t = load_file(str(d / "cache.safetensors"))
    except Exception as exc:
        raise DataError(f"cannot read {d / 'cache.safetensors'} ({str(exc).splitlines()[0][:100]}); rebuild the "
                        "cache with `prunefit cache`") from None
    if len(t.get("mean", ())) != len(meta["captions"]) or len(t.get("text", ())) != len(meta["captions"]):
        raise DataError(f"cache {d}: cache.safetensors and cache.json disagree on the sample count; rebuild it")
    return LatentCache(t["mean"], t["std"], t["text"], meta.pop("captions"), meta)
