"""What a removal method works on: the model being edited, a frozen reference, components and concepts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunefit.models.components import Components, encode_prompts
from prunefit.utils.device import as_device


@dataclass
class RemovalContext:
    """``unet`` is edited in place; ``frozen`` gives targets (a frozen copy of it, or the unpruned teacher)."""

    unet: torch.nn.Module
    frozen: torch.nn.Module
    components: Components
    seed: int = 0
    device: str | torch.device = "auto"
    """auto (the default, as every config's): resolved by ``utils.device.as_device`` when the context is made."""

    def __post_init__(self) -> None:
        self.device = as_device(self.device)

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder states [B, L, C] of ``prompts`` on the context's device."""
        return encode_prompts(self.components, prompts).to(self.device)

    def tokens(self, prompts: list[str]):
        """Token ids of ``prompts`` padded to the tokenizer's length (``input_ids`` [B, L])."""
        tok = self.components.tokenizer
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt")

    def native_latent(self) -> int:
        """The latent side length at the model's native resolution."""
        return self.components.native_resolution // self.components.vae_scale_factor


def cross_attentions(unet) -> list[tuple[str, torch.nn.Module]]:
    """Every cross-attention (attn2) of the UNet that still exists (experts may have dropped blocks)."""
    return [(n, m) for n, m in unet.named_modules() if n.endswith("attn2") and hasattr(m, "to_k")]


def ffn_outputs(unet) -> list[tuple[str, torch.nn.Linear]]:
    """Every feed-forward output projection (ff.net.2) that still exists, in execution order."""
    return [(n, m) for n, m in unet.named_modules() if n.endswith("ff.net.2") and isinstance(m, torch.nn.Linear)]


ESD_U_EXCLUDED_PREFIXES = ("conv_norm_out", "conv_out", "time_embedding", "time_embed")
"""Top-level modules ESD-u leaves frozen besides cross-attention: the output head (CompVis ``out.``) and the time
embedding (CompVis ``time_embed``), as the original ``train-esd.py`` does."""


def param_subset(unet, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    """ESD's parameter subsets, as the original ``train-esd.py``: 'xattn' (every "attn2" parameter, ESD-x),
    'noxattn' (ESD-u: all but cross-attention, the output head and the time embedding), 'selfattn' ("attn1"),
    'full'. On SD 2.1: xattn 80 tensors / 50,352,320 parameters, noxattn 598 / 813,495,680 (the APTP code's
    esd_diffusers.py also trains the head and the time embedding)."""
    from prunefit.errors import ConfigError

    params = list(unet.named_parameters())
    if which == "xattn":
        return [(n, p) for n, p in params if "attn2" in n]
    if which == "noxattn":
        return [(n, p) for n, p in params if "attn2" not in n and not n.startswith(ESD_U_EXCLUDED_PREFIXES)]
    if which == "selfattn":
        return [(n, p) for n, p in params if "attn1" in n]
    if which == "full":
        return params
    raise ConfigError(f"unknown parameter subset {which!r}; available: ['full', 'noxattn', 'selfattn', 'xattn']")


def concept_from_index(concepts: list[str], index: int) -> str:
    """The concept of sample ``index``: the concepts in turn."""
    return concepts[index % len(concepts)]


