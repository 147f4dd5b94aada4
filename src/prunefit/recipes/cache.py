"""``prunefit cache``: precompute VAE latent distributions and text embeddings of a data source for training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prunefit.config.schema import DataConfig
from prunefit.errors import ConfigError
from prunefit.utils.device import resolve_device


@dataclass
class CacheConfig:
    """``prunefit cache``: precompute VAE latent distributions and text embeddings of a data source."""

    model: str = "toyworld"
    output_dir: str = "runs/cache"
    samples: int = 4096
    batch_size: int = 64
    shard_size: int = 1024
    """Samples per shard file (shard-00000.safetensors, ...): training reads only the rows a batch needs, so the
    cache never has to fit in RAM. 0 = the older single cache.safetensors, loaded whole into RAM."""
    seed: int = 0
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if self.samples < 1 or self.batch_size < 1:
            raise ConfigError("samples and batch_size must be >= 1")
        if self.shard_size < 0:
            raise ConfigError(f"shard_size must be >= 1 (0 = one unsharded file), got {self.shard_size}")


@dataclass
class CacheResult:
    output_dir: Path
    samples: int

    def lines(self) -> list[str]:
        """What the run did, for the console: samples cached, folder."""
        return [f"cached {self.samples} samples -> {self.output_dir}"]


def main(cfg: CacheConfig) -> CacheResult:
    """Encode ``cfg.samples`` samples of ``cfg.data`` with the model's VAE and text encoder into a cache folder
    (``finetune cache_dir=`` / ``bilevel cache_dir=`` read it)."""
    from prunefit.data.cache import build_cache
    from prunefit.data.datasets import build_data
    from prunefit.models.components import load_components

    comps = load_components(cfg.model, device=cfg.device)
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    out = build_cache(comps, data, cfg.samples, Path(cfg.output_dir), cfg.batch_size,
                      {"model": comps.source, "data": cfg.data.source, "seed": cfg.seed}, cfg.shard_size or None)
    return CacheResult(out, cfg.samples)
