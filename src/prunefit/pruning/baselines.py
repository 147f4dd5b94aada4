"""Magnitude and random structured pruning at a target MAC ratio (the baselines APTP is compared with).

Every width-gate entry gets a score (magnitude: the L2 norm of the weights it removes; random: a
seeded uniform draw); entries are removed in increasing score-per-MAC order until the MAC ratio reaches
the target, always keeping at least one entry per group. Depth gates are kept. With ``width_multiple`` > 1 a
group whose gates are narrower than the multiple loses its lowest-scoring gates a chunk at a time (the fewest
whose channels are a multiple, ``spec.width_steps``), so the selection itself keeps every width on a multiple.
"""

from __future__ import annotations

import torch

from prunefit.pruning.kinds import WIDTH_KINDS
from prunefit.pruning.macs import MacModel
from prunefit.pruning.spec import GateSpec, width_steps


def magnitude_scores(unet, spec: GateSpec) -> list[torch.Tensor]:
    """Per width group, the L2 norm of each gate's weights (conv1 rows / q,k,v rows / GEGLU rows): [size] each."""
    scores = []
    for g in spec.width:
        w = WIDTH_KINDS[g.kind].rows(unet.get_submodule(g.module))
        per_channel = w.pow(2).sum(1)
        scores.append(per_channel.view(g.size, g.per_gate).sum(1).sqrt())
    return scores


def random_scores(spec: GateSpec, seed: int) -> list[torch.Tensor]:
    """Per width group, a seeded uniform score [size] for each gate (the random baseline)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(g.size, generator=gen) for g in spec.width]


def prune_to_target(spec: GateSpec, macs: MacModel, scores: list[torch.Tensor], target: float,
                    width_multiple: int = 1) -> torch.Tensor:
    """Greedy: drop the lowest score-per-MAC chunks until MACs / total <= ``target``. Returns [dim] 0/1.

    A chunk is one gate, or in a group that steps by n gates (``width_steps``) its n lowest-scoring remaining
    gates, scored by their mean; every group keeps at least one chunk. A multi-gate chunk that would take the
    ratio below the target is held back (its group closes) while finer chunks can finish the job; if none can,
    the held-back chunk that undershoots least is dropped. ``width_multiple=1`` is gate by gate, as before."""
    steps = width_steps(spec, width_multiple)
    arch = torch.ones(spec.dim)
    chunks = []  # (score per MAC, flat index of the first gate, group, flat indices of the chunk's gates)
    offset = 0
    for gi, (g, s, step) in enumerate(zip(spec.width, scores, steps)):
        cost = max(macs.group_coef[gi], 1e-9)
        ranked = sorted(range(g.size), key=lambda j: (float(s[j]), j))
        for c in range(0, g.size, step):
            members = [offset + j for j in ranked[c : c + step]]
            chunks.append((sum(float(s[j - offset]) for j in members) / (step * cost), members[0], gi, members))
        offset += g.size
    chunks.sort(key=lambda c: c[:3])
    kept_in_group = [g.size for g in spec.width]
    ratio = float(macs.ratio(arch.unsqueeze(0)))
    held: dict[int, tuple[float, list[int]]] = {}  # closed group -> (its next chunk's MAC share, its gates)
    for _, _, gi, members in chunks:
        if ratio <= target:
            break
        if kept_in_group[gi] == steps[gi] or gi in held:
            continue
        drop = macs.group_coef[gi] * steps[gi] / macs.total
        if steps[gi] > 1 and ratio - drop < target:
            held[gi] = (drop, members)
            continue
        arch[members] = 0.0
        kept_in_group[gi] -= steps[gi]
        ratio -= drop
    if ratio > target and held:
        drop, members = min(held.values(), key=lambda h: h[0])
        arch[members] = 0.0
    return arch
