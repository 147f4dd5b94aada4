"""The paper's bilevel method: configuration and presets (``config``), the penalized objective (``objective``)
and the phases each preset trains (``phases``)."""

from prunefit.removal.bilevel.config import PRESETS, BilevelConfig, Preset

__all__ = ["PRESETS", "BilevelConfig", "Preset"]
