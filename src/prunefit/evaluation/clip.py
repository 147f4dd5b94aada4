"""CLIP image/text embeddings from a transformers ``CLIPModel`` (local folder or hub id), and the CLIP score.

Embeddings are computed from the towers and projections directly (``vision_model -> visual_projection``),
which is stable across transformers 4.x / 5.x (5.x changed ``get_image_features``' return type, which
breaks torchmetrics' CLIPScore). Preprocessing follows the model's ``preprocessor_config.json``
(resize the short side bicubic, the long side floored as transformers does, centre crop, normalize),
done in torch without torchvision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from prunefit.errors import ModelLoadError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


CLAMPS = ("mean_at_zero", "each_at_zero", "none")
"""How a set's CLIP score is clamped: torchmetrics' CLIPScore max(mean(s), 0); the mean of max(s_i, 0); or the
plain mean (the paper's code)."""


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Per-pair ``scale * cos(image, text)``, unclamped; [N, D] x2 -> [N]. The paper's code and torchmetrics'
    CLIPScore: scale 100; the UnlearnDiffAtk leaderboard: scale 1."""
    cos = F.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1)
    return scale * cos


def mean_clip_score(scores: torch.Tensor, clamp: str = "mean_at_zero") -> float:
    """A set's CLIP score from per-pair scores [N]: ``mean_at_zero`` = max(mean(s), 0) (torchmetrics),
    ``each_at_zero`` = mean(max(s_i, 0)), ``none`` = mean(s) (the paper's code)."""
    if clamp == "mean_at_zero":
        return max(scores.mean().item(), 0.0)
    if clamp == "each_at_zero":
        return scores.clamp_min(0).mean().item()
    if clamp == "none":
        return scores.mean().item()
    raise ValueError(f"unknown CLIP-score clamp {clamp!r}; available: {list(CLAMPS)}")


def resize_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``size``; the long side is int(size * long / short),
    floored as transformers' ``get_resize_output_image_size`` does (not rounded)."""
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


@dataclass
class ClipEncoder:
    """A loaded CLIP model with its tokenizer and preprocessing settings."""

    model: object
    tokenizer: object
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> normalized float [N, 3, size, size]."""
        x = images.float() / 255.0
        x = F.interpolate(x, size=resize_shape(*x.shape[-2:], self.size), mode="bicubic", align_corners=False,
                          antialias=True)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there)."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 3, H, W] (any device) -> projected image embeddings [N, P] on the model's device."""
        m = self.model
        pooled = m.vision_model(pixel_values=self.preprocess(images.to(self.device))).pooler_output
        return m.visual_projection(pooled)

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> projected text embeddings [N, P] on the model's device."""
        m = self.model
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=m.config.text_config.max_position_embeddings, return_tensors="pt")
        pooled = m.text_model(input_ids=tok.input_ids.to(self.device),
                              attention_mask=tok.attention_mask.to(self.device)).pooler_output
        return m.text_projection(pooled)


def load_clip(name: str, device: str | torch.device = "cpu") -> ClipEncoder:
    """Load a CLIPModel + tokenizer from a local folder or hub id onto ``device`` (offline-aware error on failure)."""
    from transformers import CLIPModel, CLIPTokenizer

    try:
        model = CLIPModel.from_pretrained(name).eval().to(device)
        tokenizer = CLIPTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = "folder" if Path(name).exists() else "hub id"
        raise ModelLoadError(f"cannot load CLIP model {name!r} ({where}): {str(exc).splitlines()[0][:160]}; pass "
                             "a local CLIPModel folder (e.g. a saved openai/clip-vit-base-patch32)") from None
    size, mean, std = model.config.vision_config.image_size, CLIP_MEAN, CLIP_STD
    pre = Path(name) / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        crop = cfg.get("crop_size", size)
        size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return ClipEncoder(model, tokenizer, int(size), mean, std, name)
