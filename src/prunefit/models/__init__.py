"""Load or build the Stable Diffusion components (see components, tiny, tokenizer, schedulers)."""

from prunefit.models.components import Components, load_components, make_pipeline

__all__ = ["Components", "load_components", "make_pipeline"]
