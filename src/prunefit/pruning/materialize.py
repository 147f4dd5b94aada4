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

from prunefit.pruning.kinds import DEPTH_KINDS, WIDTH_KINDS
from prunefit.pruning.spec import GateSpec


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path)
    if isinstance(parent, nn.ModuleList):
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


@torch.no_grad()
def materialize(unet, spec: GateSpec, arch: torch.Tensor) -> dict:
    """Prune ``unet`` in place to the hard architecture ``arch`` [dim] (0/1, any device: kept indices are taken on
    the host and slice weights wherever they live); returns {group name: kept}."""
    arch = arch.detach().reshape(-1).cpu()
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
        WIDTH_KINDS[g.kind].prune(mod, mask)
    for dg, d in zip(spec.depth, depth[0]):
        kept[dg.name] = int(d >= 0.5)
        if d < 0.5:
            _set_module(unet, dg.module, DEPTH_KINDS[dg.kind].skip(dg.out_channels))
    return kept
