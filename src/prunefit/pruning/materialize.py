"""Physically prune a UNet to a hard architecture: slice channels, heads and FFN groups; drop blocks.

``materialize(unet, spec, arch)`` works in place on a UNet that already holds the weights to keep
(load pretrained weights first, then slice: the official APTP HEAD did the reverse and silently
re-initialized every sliced tensor). Dropped blocks become ``SkipResnet`` / ``SkipTransformer``,
which return the identity path, so the result is still a stock ``UNet2DConditionModel`` object usable
inside ``StableDiffusionPipeline``. Gates must keep at least one entry per width group.
"""

from __future__ import annotations

import torch
from torch import nn

from prunefit.pruning.spec import GateSpec


class SkipResnet(nn.Module):
    """A removed resnet: returns its identity path (the first ``out_channels`` input channels)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, input_tensor: torch.Tensor, temb=None, *args, **kwargs) -> torch.Tensor:
        return input_tensor[:, : self.out_channels]


class SkipTransformer(nn.Module):
    """A removed Transformer2DModel: returns its input (in the caller's return format)."""

    def forward(self, hidden_states: torch.Tensor, *args, return_dict: bool = True, **kwargs):
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
    """Keep the GroupNorm groups of ``norm2`` where ``keep_groups`` is 1 (conv1 out, temb rows, conv2 in)."""
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
    """Keep the attention heads where ``keep`` is 1 (rows of q/k/v, columns of to_out)."""
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
    """Keep GEGLU inner-width groups where ``keep`` is 1 (both halves of the projection, net[2] columns)."""
    proj = ff.net[0].proj
    inner = proj.out_features // 2
    idx = _keep_index(keep, inner // keep.numel())
    _slice(proj, out_idx=torch.cat([idx, idx + inner]))
    _slice(ff.net[2], in_idx=idx)


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path)
    if isinstance(parent, nn.ModuleList):
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


@torch.no_grad()
def materialize(unet, spec: GateSpec, arch: torch.Tensor) -> dict:
    """Prune ``unet`` in place to the hard architecture ``arch`` [dim] (0/1); returns {group name: kept}."""
    arch = arch.reshape(-1)
    widths, depth = spec.split(arch.unsqueeze(0))
    modules = dict(unet.named_modules())
    dropped = {dg.module for dg, d in zip(spec.depth, depth[0]) if d < 0.5}
    kept: dict[str, int] = {}
    for g, w in zip(spec.width, widths):
        mask = (w[0] >= 0.5).float()
        if mask.sum() == 0:
            raise ValueError(f"architecture removes every gate of {g.name}; keep at least one per width group")
        kept[g.name] = int(mask.sum().item())
        if g.unit in dropped:
            continue
        mod = modules[g.module]
        if mask.all():
            continue
        {"resnet": prune_resnet, "heads": prune_heads, "ffn": prune_ffn}[g.kind](mod, mask)
    for dg, d in zip(spec.depth, depth[0]):
        kept[dg.name] = int(d >= 0.5)
        if d < 0.5:
            _set_module(unet, dg.module, SkipResnet(dg.out_channels) if dg.kind == "resnet" else SkipTransformer())
    return kept
