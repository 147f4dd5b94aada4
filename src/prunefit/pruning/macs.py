"""Analytic UNet MACs, per module and as a differentiable function of the gates (for the resource loss).

Counts follow what ``torch.utils.flop_counter.FlopCounterMode`` counts (convolutions, linear layers,
and the two attention matmuls), so they agree with it: conv = out.numel() * C_in/groups * k_h * k_w;
linear = out.numel() * in_features; attention = 2 * B * Lq * Lk * inner (cross-attention with Lk = the
text length: the official counter used Lq for both and over-counted cross-attention). Norms and
activations are not counted (FlopCounterMode ignores them; they are < 1% of an SD UNet's MACs).

Under gates, every resnet and transformer is a unit: MACs = outside + sum_units d_u * (fixed_u +
sum_groups coef_g * (sum of the group's gate values)), exact for hard gates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunefit.models.inputs import unet_inputs
from prunefit.pruning.kinds import WIDTH_KINDS
from prunefit.pruning.spec import GateSpec


@torch.no_grad()
def module_macs(unet, latent_size: int, text_length: int, batch: int = 1) -> dict[str, int]:
    """MACs of every conv / linear module and every attention core (key '<attn>.core') in one forward."""
    counts: dict[str, int] = {}
    handles = []
    for name, mod in unet.named_modules():
        if isinstance(mod, nn.Conv2d):
            def conv_hook(m, args, out, name=name):
                """Add the conv's MACs: out.numel() * C_in/groups * k_h * k_w."""
                k = m.kernel_size[0] * m.kernel_size[1]
                counts[name] = counts.get(name, 0) + out.numel() * (m.in_channels // m.groups) * k
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            def lin_hook(m, args, out, name=name):
                """Add the linear layer's MACs: out.numel() * in_features."""
                counts[name] = counts.get(name, 0) + out.numel() * m.in_features
            handles.append(mod.register_forward_hook(lin_hook))
        elif hasattr(mod, "to_q") and hasattr(mod, "heads"):
            def attn_hook(m, args, kwargs, out, name=name):
                """Add the attention core's MACs: 2 * B * Lq * Lk * inner_dim."""
                x = args[0] if args else kwargs["hidden_states"]
                ctx = kwargs.get("encoder_hidden_states")
                ctx = x if ctx is None else ctx
                b, lq = x.shape[0], x.shape[-2] if x.dim() == 3 else x.shape[-1] * x.shape[-2]
                counts[f"{name}.core"] = counts.get(f"{name}.core", 0) + 2 * b * lq * ctx.shape[-2] * m.inner_dim
            handles.append(mod.register_forward_hook(attn_hook, with_kwargs=True))
    try:
        sample, t, text = unet_inputs(unet, batch, latent_size, text_length, next(unet.parameters()).dtype,
                                      next(unet.parameters()).device)
        unet(sample, t, text)
    finally:
        for h in handles:
            h.remove()
    return counts


@dataclass
class MacModel:
    """MACs of a gated UNet as a function of its architecture vector (linear in each gate, per unit)."""

    spec: GateSpec
    total: float
    outside: float
    unit_fixed: dict[str, float]
    group_coef: list[float]
    """Per width group: MACs per kept gate entry."""
    depth_unit: list[str]
    """Unit path of each depth gate."""

    def macs(self, vector: torch.Tensor) -> torch.Tensor:
        """[B, dim] soft or hard gates -> [B] MACs (differentiable)."""
        widths, depth = self.spec.split(vector)
        units: dict[str, torch.Tensor] = {u: torch.full(vector.shape[:1], v, dtype=vector.dtype, device=vector.device)
                                          for u, v in self.unit_fixed.items()}
        for g, w, c in zip(self.spec.width, widths, self.group_coef):
            units[g.unit] = units[g.unit] + c * w.sum(-1)
        d_of = {u: depth[:, j] for j, u in enumerate(self.depth_unit)}
        total = torch.full(vector.shape[:1], self.outside, dtype=vector.dtype, device=vector.device)
        for u, m in units.items():
            total = total + (d_of[u] * m if u in d_of else m)
        return total

    def ratio(self, vector: torch.Tensor) -> torch.Tensor:
        """MACs relative to the unpruned UNet, [B]."""
        return self.macs(vector) / self.total


def mac_model(unet, spec: GateSpec, latent_size: int, text_length: int) -> MacModel:
    """Build the MAC model of ``unet`` (unpruned, stock) at a latent size and text length."""
    counts = module_macs(unet, latent_size, text_length)
    total = float(sum(counts.values()))
    units = sorted({g.unit for g in spec.width} | {d.module for d in spec.depth}, key=len, reverse=True)

    def unit_of(name: str):
        """The gated unit (resnet or transformer path) that module ``name`` lies in, or None."""
        return next((u for u in units if name == u or name.startswith(u + ".")), None)

    unit_sum: dict[str, float] = {u: 0.0 for u in units}
    outside = 0.0
    for name, c in counts.items():
        u = unit_of(name)
        if u is None:
            outside += c
        else:
            unit_sum[u] += c
    coefs = []
    prunable: dict[str, float] = {u: 0.0 for u in units}
    for g in spec.width:
        names = [f"{g.module}.{part}" for part in WIDTH_KINDS[g.kind].mac_parts]
        part = float(sum(counts.get(n, 0) for n in names))
        prunable[g.unit] += part
        coefs.append(part / g.size)
    fixed = {u: unit_sum[u] - prunable[u] for u in units}
    return MacModel(spec, total, outside, fixed, coefs, [d.module for d in spec.depth])
