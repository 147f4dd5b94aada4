"""What each kind of gate acts on, in one table that gating, MAC counting, scoring and materialization read.

A width gate of kind ``resnet`` covers GroupNorm groups of a resnet's inner width (conv1 rows, time-embedding
rows, norm2, conv2 columns); ``heads`` covers attention heads (q/k/v rows, to_out columns, the attention core);
``ffn`` covers GEGLU inner-width groups (both halves of the projection, net[2] columns). A depth gate of kind
``resnet`` or ``transformer`` removes a whole block, whose identity path is then kept. Adding a kind = one row in
``WIDTH_KINDS`` or ``DEPTH_KINDS`` (and its entries in ``spec.gate_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class SkipResnet(nn.Module):
    """A removed resnet: returns its identity path (the first ``out_channels`` input channels)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, input_tensor: torch.Tensor, temb=None, *args, **kwargs) -> torch.Tensor:
        """The identity path: input [B, C_in, h, w] -> its first ``out_channels`` channels [B, out_channels, h, w]."""
        return input_tensor[:, : self.out_channels]


class SkipTransformer(nn.Module):
    """A removed Transformer2DModel: returns its input (in the caller's return format)."""

    def forward(self, hidden_states: torch.Tensor, *args, return_dict: bool = True, **kwargs):
        """The identity: hidden states [B, C, h, w] returned unchanged, in diffusers' output form."""
        if return_dict:
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=hidden_states)
        return (hidden_states,)


def _keep_index(mask: torch.Tensor, per_gate: int) -> torch.Tensor:
    keep = mask.bool().repeat_interleave(per_gate)
    return keep.nonzero().squeeze(1)


def _slice(mod: nn.Module, out_idx=None, in_idx=None) -> None:
    """Keep output rows ``out_idx`` (and bias) and input columns ``in_idx`` of a Linear or Conv2d."""
    linear = isinstance(mod, nn.Linear)
    out_attr, in_attr = ("out_features", "in_features") if linear else ("out_channels", "in_channels")
    w = mod.weight.data
    if out_idx is not None:
        w = w[out_idx]
        if mod.bias is not None:
            mod.bias = nn.Parameter(mod.bias.data[out_idx].clone())
        setattr(mod, out_attr, len(out_idx))
    if in_idx is not None:
        w = w[:, in_idx]
        setattr(mod, in_attr, len(in_idx))
    mod.weight = nn.Parameter(w.clone())


def prune_resnet(resnet, keep_groups: torch.Tensor) -> None:
    """Keep the GroupNorm groups of ``norm2`` where ``keep_groups`` [num_groups] is 1 (conv1 out, temb rows,
    conv2 in); in place."""
    n2 = resnet.norm2
    idx = _keep_index(keep_groups, n2.num_channels // n2.num_groups)
    _slice(resnet.conv1, out_idx=idx)
    if resnet.time_emb_proj is not None:
        if resnet.time_embedding_norm != "default":
            raise NotImplementedError("width pruning supports time_embedding_norm='default' resnets (SD 1.x/2.x)")
        _slice(resnet.time_emb_proj, out_idx=idx)
    new = nn.GroupNorm(int(keep_groups.sum().item()), len(idx), eps=n2.eps, affine=n2.affine)
    if n2.affine:
        new.weight = nn.Parameter(n2.weight.data[idx].clone())
        new.bias = nn.Parameter(n2.bias.data[idx].clone())
    resnet.norm2 = new.to(n2.weight.device if n2.affine else "cpu")
    _slice(resnet.conv2, in_idx=idx)


def prune_heads(attn, keep: torch.Tensor) -> None:
    """Keep the attention heads where ``keep`` [heads] is 1 (rows of q/k/v, columns of to_out); in place."""
    dh = attn.inner_dim // attn.heads
    idx = _keep_index(keep, dh)
    for lin in (attn.to_q, attn.to_k, attn.to_v):
        _slice(lin, out_idx=idx)
    _slice(attn.to_out[0], in_idx=idx)
    attn.heads = int(keep.sum().item())
    attn.inner_dim = len(idx)
    if hasattr(attn, "inner_kv_dim"):
        attn.inner_kv_dim = len(idx)


def prune_ffn(ff, keep: torch.Tensor) -> None:
    """Keep GEGLU inner-width groups where ``keep`` [groups] is 1 (both halves of the projection, net[2] columns);
    in place."""
    proj = ff.net[0].proj
    inner = proj.out_features // 2
    idx = _keep_index(keep, inner // keep.numel())
    _slice(proj, out_idx=torch.cat([idx, idx + inner]))
    _slice(ff.net[2], in_idx=idx)


def _resnet_rows(resnet) -> torch.Tensor:
    return resnet.conv1.weight.detach().flatten(1)


def _head_rows(attn) -> torch.Tensor:
    return torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight], dim=1).detach()


def _ffn_rows(ff) -> torch.Tensor:
    proj = ff.net[0].proj.weight.detach()
    inner = proj.shape[0] // 2
    return torch.cat([proj[:inner], proj[inner:]], dim=1)


@dataclass(frozen=True)
class WidthKind:
    gated_input: Callable[[nn.Module], tuple[nn.Module, int]]
    """(submodule, channel dim) whose input the soft gates mask: zeroing a gate there equals removing it."""
    mac_parts: tuple[str, ...]
    """Submodules (relative names) whose MACs scale with the kept gates."""
    rows: Callable[[nn.Module], torch.Tensor]
    """Weights [channels, fan] a gate owns, channel by channel (magnitude scores)."""
    prune: Callable[[nn.Module, torch.Tensor], None]
    """Slice the module in place to the gates whose mask is 1."""


@dataclass(frozen=True)
class DepthKind:
    identity: Callable[[torch.Tensor, int], torch.Tensor]
    """The block's identity path from its input and ``out_channels``."""
    skip: Callable[[int], nn.Module]
    """The module that replaces a removed block."""


WIDTH_KINDS: dict[str, WidthKind] = {
    "resnet": WidthKind(lambda m: (m.conv2, 1), ("conv1", "time_emb_proj", "conv2"), _resnet_rows, prune_resnet),
    "heads": WidthKind(lambda m: (m.to_out[0], -1), ("to_q", "to_k", "to_v", "core", "to_out.0"), _head_rows,
                       prune_heads),
    "ffn": WidthKind(lambda m: (m.net[2], -1), ("net.0.proj", "net.2"), _ffn_rows, prune_ffn),
}
DEPTH_KINDS: dict[str, DepthKind] = {
    "resnet": DepthKind(lambda x, out_channels: x[:, :out_channels], SkipResnet),
    "transformer": DepthKind(lambda x, out_channels: x, lambda out_channels: SkipTransformer()),
}
