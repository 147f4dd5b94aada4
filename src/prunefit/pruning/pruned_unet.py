"""A pruned Stable Diffusion UNet that plain diffusers loads: the stock UNet rebuilt with recorded per-layer widths.

This file imports only torch and diffusers (never prunefit): ``prunefit export`` copies it verbatim into a pipeline
folder as ``unet/pruned_unet.py`` and names it in ``model_index.json`` (``"unet": ["pruned_unet",
"PrunedUNet2DConditionModel"]``), so ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` loads the
expert on a machine without prunefit. ``unet/config.json`` is the stock UNet config plus ``pruned_layers``, one
entry per module path:

- ``{"kind": "resnet", "channels": C, "groups": G}``: a ResnetBlock2D's inner width (conv1 and time_emb_proj rows,
  norm2 with G groups, conv2 columns);
- ``{"kind": "attention", "heads": H, "inner_dim": D}``: an Attention's kept heads (q/k/v rows, to_out[0] columns);
- ``{"kind": "ffn", "inner_dim": N}``: a GEGLU FeedForward's inner width (net[0].proj rows 2N, net[2] columns);
- ``{"kind": "skip_resnet", "out_channels": C}`` / ``{"kind": "skip_transformer"}``: a removed block, replaced by its
  identity path.

The layers are only re-shaped here; the weights come from ``diffusion_pytorch_model.safetensors`` as usual.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from diffusers import UNet2DConditionModel
from torch import nn


class SkipResnet(nn.Module):
    """A removed resnet: returns its identity path (the first ``out_channels`` input channels)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, input_tensor: torch.Tensor, temb=None, *args, **kwargs) -> torch.Tensor:
        """Input [B, C_in, h, w] -> its first ``out_channels`` channels."""
        return input_tensor[:, : self.out_channels]


class SkipTransformer(nn.Module):
    """A removed Transformer2DModel: returns its input (in the caller's return format)."""

    def forward(self, hidden_states: torch.Tensor, *args, return_dict: bool = True, **kwargs):
        """The identity, in diffusers' output form."""
        if return_dict:
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=hidden_states)
        return (hidden_states,)


def _like(old: nn.Module, out_features: Optional[int] = None, in_features: Optional[int] = None) -> nn.Module:
    """A fresh Linear or Conv2d shaped like ``old`` except for the given output / input width."""
    kw = {"bias": old.bias is not None, "device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        return nn.Linear(in_features or old.in_features, out_features or old.out_features, **kw)
    return nn.Conv2d(in_features or old.in_channels, out_features or old.out_channels, old.kernel_size,
                     stride=old.stride, padding=old.padding, dilation=old.dilation, **kw)


def _resnet(block: nn.Module, e: dict) -> None:
    c = e["channels"]
    block.conv1 = _like(block.conv1, out_features=c)
    if block.time_emb_proj is not None:
        block.time_emb_proj = _like(block.time_emb_proj, out_features=c)
    n2 = block.norm2
    like = {"device": n2.weight.device, "dtype": n2.weight.dtype} if n2.affine else {}
    block.norm2 = nn.GroupNorm(e["groups"], c, eps=n2.eps, affine=n2.affine, **like)
    block.conv2 = _like(block.conv2, in_features=c)


def _attention(attn: nn.Module, e: dict) -> None:
    d = e["inner_dim"]
    for name in ("to_q", "to_k", "to_v"):
        setattr(attn, name, _like(getattr(attn, name), out_features=d))
    attn.to_out[0] = _like(attn.to_out[0], in_features=d)
    attn.heads = attn.sliceable_head_dim = e["heads"]
    attn.inner_dim = d
    if hasattr(attn, "inner_kv_dim"):
        attn.inner_kv_dim = d


def _ffn(ff: nn.Module, e: dict) -> None:
    ff.net[0].proj = _like(ff.net[0].proj, out_features=2 * e["inner_dim"])
    ff.net[2] = _like(ff.net[2], in_features=e["inner_dim"])


_RESHAPE = {"resnet": _resnet, "attention": _attention, "ffn": _ffn}
_SKIP = {"skip_resnet": lambda e: SkipResnet(e["out_channels"]), "skip_transformer": lambda e: SkipTransformer()}


def apply_pruned_layers(unet: nn.Module, pruned_layers: dict[str, dict]) -> None:
    """Re-shape ``unet``'s layers in place to ``pruned_layers`` ({module path: entry}, see the module docstring)."""
    for path, e in pruned_layers.items():
        if e["kind"] in _RESHAPE:
            _RESHAPE[e["kind"]](unet.get_submodule(path), e)
        elif e["kind"] in _SKIP:
            parent_path, _, name = path.rpartition(".")
            parent = unet.get_submodule(parent_path)
            if isinstance(parent, nn.ModuleList):
                parent[int(name)] = _SKIP[e["kind"]](e)
            else:
                setattr(parent, name, _SKIP[e["kind"]](e))
        else:
            raise ValueError(f"unknown pruned layer kind {e['kind']!r} at {path}; "
                             f"known: {sorted([*_RESHAPE, *_SKIP])}")


class PrunedUNet2DConditionModel(UNet2DConditionModel):
    """``UNet2DConditionModel`` whose config also records ``pruned_layers``; built stock, then re-shaped."""

    def __init__(self, pruned_layers: Optional[dict[str, dict]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_to_config(pruned_layers=pruned_layers or {})
        apply_pruned_layers(self, pruned_layers or {})


# diffusers reads a model's config keys from its __init__ signature: the stock UNet's keywords plus pruned_layers.
_stock = inspect.signature(UNet2DConditionModel.__init__)
PrunedUNet2DConditionModel.__init__.__signature__ = _stock.replace(parameters=[
    *_stock.parameters.values(), inspect.Parameter("pruned_layers", inspect.Parameter.KEYWORD_ONLY, default=None)])
