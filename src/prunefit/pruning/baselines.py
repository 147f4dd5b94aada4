"""Magnitude and random structured pruning at a target MAC ratio (the baselines APTP is compared with).

Every width-gate entry gets a score (magnitude: the L2 norm of the weights it removes; random: a
seeded uniform draw); entries are removed in increasing score-per-MAC order until the MAC ratio reaches
the target, always keeping at least one entry per group. Depth gates are kept.
"""

from __future__ import annotations

import torch

from prunefit.pruning.kinds import WIDTH_KINDS
from prunefit.pruning.macs import MacModel
from prunefit.pruning.spec import GateSpec


def magnitude_scores(unet, spec: GateSpec) -> list[torch.Tensor]:
    """Per width group, the L2 norm of each gate's weights (conv1 rows / q,k,v rows / GEGLU rows)."""
    scores = []
    for g in spec.width:
        w = WIDTH_KINDS[g.kind].rows(unet.get_submodule(g.module))
        per_channel = w.pow(2).sum(1)
        scores.append(per_channel.view(g.size, g.per_gate).sum(1).sqrt())
    return scores


def random_scores(spec: GateSpec, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(g.size, generator=gen) for g in spec.width]


def prune_to_target(spec: GateSpec, macs: MacModel, scores: list[torch.Tensor], target: float) -> torch.Tensor:
    """Greedy: drop the lowest score-per-MAC entries until MACs / total <= ``target``. Returns [dim] 0/1."""
    arch = torch.ones(spec.dim)
    widths, _ = spec.split(arch.unsqueeze(0))
    entries = []
    offset = 0
    for gi, (g, s) in enumerate(zip(spec.width, scores)):
        cost = max(macs.group_coef[gi], 1e-9)
        for j in range(g.size):
            entries.append((float(s[j]) / cost, offset + j, gi))
        offset += g.size
    entries.sort()
    kept_in_group = [g.size for g in spec.width]
    ratio = float(macs.ratio(arch.unsqueeze(0)))
    for _, idx, gi in entries:
        if ratio <= target:
            break
        if kept_in_group[gi] == 1:
            continue
        arch[idx] = 0.0
        kept_in_group[gi] -= 1
        ratio -= macs.group_coef[gi] / macs.total
    return arch
