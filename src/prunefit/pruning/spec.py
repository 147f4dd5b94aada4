"""The gate layout of a stock ``UNet2DConditionModel`` (APTP): which widths and blocks can be pruned.

Width gates: one per GroupNorm group of every resnet's ``norm2``; one per head of every attention
(``attn1`` self, ``attn2`` cross); one per group of every GEGLU feed-forward's inner width (32 groups
by default, as the official ``ff_gate_width``). Depth gates: the last resnet and the last transformer
of every down and up block (the mid block has none).

Order (identical to the official code, so architecture vectors line up): down blocks, mid, up blocks;
inside a block all resnets, then all attentions; inside a transformer block [attn1 heads, attn2 heads,
ffn]. On the SD 2.1 UNet this gives 70 width groups with 1,606 entries and 14 depth gates (1,620).
A flat architecture vector is [width entries in order | depth entries]. ``round_widths`` rounds a hard
vector's keep counts so every kept width is a multiple of ``width_multiple`` (GPU tensor-core tiles).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class WidthGroup:
    """A group of width gates on one module. ``size`` gates, each covering ``per_gate`` channels."""

    name: str
    kind: str
    """'resnet' (norm2 groups), 'heads' (attention heads) or 'ffn' (GEGLU inner-width groups)."""
    module: str
    """Path of the resnet, the Attention, or the FeedForward module."""
    size: int
    per_gate: int
    unit: str
    """Path of the resnet or Transformer2DModel this group belongs to (its depth unit)."""


@dataclass(frozen=True)
class DepthGate:
    """A removable block: the last resnet or the last transformer of a down / up block."""

    name: str
    kind: str
    """'resnet' or 'transformer'."""
    module: str
    out_channels: int
    """Channels of the identity path (an up-block resnet's input also holds the skip connection)."""


@dataclass(frozen=True)
class GateSpec:
    width: tuple[WidthGroup, ...]
    depth: tuple[DepthGate, ...]

    @property
    def width_dim(self) -> int:
        """Number of width-gate entries (the sum of the groups' sizes)."""
        return sum(g.size for g in self.width)

    @property
    def depth_dim(self) -> int:
        """Number of depth gates."""
        return len(self.depth)

    @property
    def dim(self) -> int:
        """Length D of an architecture vector: width entries then depth gates."""
        return self.width_dim + self.depth_dim

    def split(self, vector: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """[B, dim] -> ([B, size_i] per width group, [B, depth_dim])."""
        if vector.shape[-1] != self.dim:
            raise ValueError(f"architecture vector has {vector.shape[-1]} entries; this UNet's layout has {self.dim}")
        widths = list(torch.split(vector[..., : self.width_dim], [g.size for g in self.width], dim=-1))
        return widths, vector[..., self.width_dim :]

    def join(self, widths: list[torch.Tensor], depth: torch.Tensor) -> torch.Tensor:
        """([B, size_i] per width group, [B, depth_dim]) -> [B, dim]; the inverse of ``split``."""
        return torch.cat([*widths, depth], dim=-1)

    def ones(self, batch: int = 1) -> torch.Tensor:
        """The unpruned architecture: all-ones [batch, dim]."""
        return torch.ones(batch, self.dim)

    def group_template(self) -> torch.Tensor:
        """[dim]: 1/size for each width entry of a group of ``size``, 1 for depth entries (APTP's wdn template)."""
        parts = [torch.full((g.size,), 1.0 / g.size) for g in self.width]
        return torch.cat(parts + [torch.ones(self.depth_dim)])

    def to_json(self) -> dict:
        """The layout as JSON: width groups and depth gates."""
        return {"width": [asdict(g) for g in self.width], "depth": [asdict(d) for d in self.depth]}


def _resnet_group(path: str, resnet) -> WidthGroup:
    g = resnet.norm2.num_groups
    return WidthGroup(f"{path}.width", "resnet", path, g, resnet.norm2.num_channels // g, path)


def _transformer_groups(path: str, transformer, ffn_groups: int) -> list[WidthGroup]:
    out = []
    for j, blk in enumerate(transformer.transformer_blocks):
        bp = f"{path}.transformer_blocks.{j}"
        for an in ("attn1", "attn2"):
            attn = getattr(blk, an, None)
            if attn is None:
                continue
            heads = attn.heads
            out.append(WidthGroup(f"{bp}.{an}.heads", "heads", f"{bp}.{an}", heads, attn.inner_dim // heads, path))
        proj = blk.ff.net[0].proj
        inner = proj.out_features // 2
        g = min(ffn_groups, inner)
        if inner % g:
            raise ValueError(f"{bp}.ff inner width {inner} is not divisible into {g} gate groups")
        out.append(WidthGroup(f"{bp}.ff.width", "ffn", f"{bp}.ff", g, inner // g, path))
    return out


def _block_gates(path: str, block, depth_gated: bool, ffn_groups: int) -> tuple[list[WidthGroup], list[DepthGate]]:
    widths: list[WidthGroup] = []
    depths: list[DepthGate] = []
    resnets = list(getattr(block, "resnets", []) or [])
    attentions = list(getattr(block, "attentions", []) or [])
    for i, r in enumerate(resnets):
        widths.append(_resnet_group(f"{path}.resnets.{i}", r))
    for i, a in enumerate(attentions):
        widths += _transformer_groups(f"{path}.attentions.{i}", a, ffn_groups)
    if depth_gated:
        if resnets:
            r = resnets[-1]
            depths.append(DepthGate(f"{path}.resnets.{len(resnets) - 1}.depth", "resnet",
                                    f"{path}.resnets.{len(resnets) - 1}", r.conv2.out_channels))
        if attentions:
            a = attentions[-1]
            depths.append(DepthGate(f"{path}.attentions.{len(attentions) - 1}.depth", "transformer",
                                    f"{path}.attentions.{len(attentions) - 1}", a.proj_out.out_features
                                    if hasattr(a.proj_out, "out_features") else a.proj_out.out_channels))
    return widths, depths


def gate_spec(unet, ffn_groups: int = 32) -> GateSpec:
    """The APTP gate layout of ``unet`` (a stock diffusers UNet2DConditionModel)."""
    widths: list[WidthGroup] = []
    depths: list[DepthGate] = []
    for i, blk in enumerate(unet.down_blocks):
        w, d = _block_gates(f"down_blocks.{i}", blk, True, ffn_groups)
        widths += w
        depths += d
    if unet.mid_block is not None:
        w, _ = _block_gates("mid_block", unet.mid_block, False, ffn_groups)
        widths += w
    for i, blk in enumerate(unet.up_blocks):
        w, d = _block_gates(f"up_blocks.{i}", blk, True, ffn_groups)
        widths += w
        depths += d
    return GateSpec(tuple(widths), tuple(depths))


def width_steps(spec: GateSpec, multiple: int) -> list[int]:
    """Per width group, the fewest gates whose channels are a multiple of ``multiple`` (the keep-count step).

    A group of ``per_gate`` channels per gate steps by ``multiple / gcd(per_gate, multiple)`` gates (SD's
    320-channel resnets, 10 channels per GroupNorm group, step by 4 groups = 40 channels at 8). A group whose full
    width is not itself a multiple cannot be rounded and steps by 1 (left as selected)."""
    if multiple < 1:
        raise ValueError(f"width_multiple must be >= 1, got {multiple}")
    return [1 if (g.size * g.per_gate) % multiple else multiple // math.gcd(g.per_gate, multiple) for g in spec.width]


def round_widths(spec: GateSpec, arch: torch.Tensor, scores: torch.Tensor, multiple: int) -> torch.Tensor:
    """Round every width group's keep count to the nearest multiple of its step (``width_steps``; half-way and a
    count below one step round up, so rounding never removes a unit): hard [..., dim] 0/1 and scores [..., dim] ->
    hard [..., dim]. Gates added are the dropped ones of highest score (e.g. APTP code logits), gates removed the
    kept ones of lowest score, ties to the lower index. Depth entries and groups already on a step are unchanged.
    Nearest, not up: rounding up moved APTP experts' MAC ratio above the target on average (0.845 for 0.8 on the
    tiny test model, against 0.825 unrounded)."""
    out = (arch.detach().float().cpu() >= 0.5).float().reshape(-1, spec.dim)
    s = scores.detach().float().cpu().expand(arch.shape).reshape(-1, spec.dim)
    offset = 0
    for g, step in zip(spec.width, width_steps(spec, multiple)):
        for b in range(out.shape[0]):
            w = out[b, offset : offset + g.size]
            kept = int(w.sum().item())
            down = kept // step * step
            target = down if kept == down or (down and 2 * (kept - down) < step) else down + step
            if target > kept:
                dropped = sorted((j for j in range(g.size) if w[j] == 0), key=lambda j: (-float(s[b, offset + j]), j))
                w[dropped[: target - kept]] = 1.0
            elif target < kept:
                held = sorted((j for j in range(g.size) if w[j] == 1), key=lambda j: (float(s[b, offset + j]), j))
                w[held[: kept - target]] = 0.0
        offset += g.size
    return out.reshape(arch.shape).to(dtype=arch.dtype, device=arch.device)


def unrounded_widths(spec: GateSpec, arch: torch.Tensor, multiple: int) -> list[str]:
    """Names of the width groups whose kept channels in hard ``arch`` [dim] are not on their step (want [])."""
    widths, _ = spec.split(arch.detach().cpu().reshape(1, -1))
    return [g.name for g, w, step in zip(spec.width, widths, width_steps(spec, multiple))
            if int((w[0] >= 0.5).sum().item()) % step]
