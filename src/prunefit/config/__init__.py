"""Define and load typed run configs (dataclass schemas; OmegaConf only at the loading boundary)."""

from prunefit.config.load import load_config, save_resolved_config, to_yaml
from prunefit.config.schema import GenerateConfig, SamplerConfig

__all__ = ["GenerateConfig", "SamplerConfig", "load_config", "save_resolved_config", "to_yaml"]
