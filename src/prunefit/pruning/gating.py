"""Apply soft or hard gates to a stock UNet with hooks, scoped by ``with gated(unet, spec, vector):``.

Where each gate acts (a zero gate equals removing what it covers, exactly):
- resnet width: on the input of ``conv2`` (after norm2 and SiLU). GroupNorm normalizes each group
  alone, so zeroing whole groups there equals deleting them from conv1/norm2/conv2. (The official
  code gated *before* norm2, where a zero gate leaves SiLU(beta) flowing into conv2: not a removal.)
- attention heads: on the input of ``to_out[0]`` (the concatenated head outputs).
- feed-forward groups: on the input of ``ff.net[2]`` (the GEGLU output).
- depth: y = (1 - d) * x_id + d * f(x) around the last resnet / transformer of a block; x_id is the
  input (for an up-block resnet, its first ``out_channels`` channels: the part without the skip).
Gates are per sample ([B, n]); activations of batch k*B (classifier-free guidance) reuse them k times.
All-ones gates leave outputs bit-identical (x * 1.0 == x; 0 * x_id + 1 * f(x) == f(x)).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from prunefit.pruning.kinds import DEPTH_KINDS, WIDTH_KINDS
from prunefit.pruning.spec import GateSpec


def _per_sample(mask: torch.Tensor, batch: int) -> torch.Tensor:
    b = mask.shape[0]
    if batch == b:
        return mask
    if batch % b:
        raise ValueError(f"gate batch {b} does not divide activation batch {batch}")
    return mask.repeat(batch // b, *([1] * (mask.dim() - 1)))


def _channel_pre_hook(gate: torch.Tensor, per_gate: int, channel_dim: int):
    """Multiply a module's input along ``channel_dim`` by ``gate`` [B, n] expanded to n * per_gate channels."""
    expanded = gate.repeat_interleave(per_gate, dim=-1)

    def hook(module, args):
        """The module's input x [B', C, ...] times the expanded gate along ``channel_dim``."""
        x = args[0]
        m = _per_sample(expanded, x.shape[0]).to(x.device, x.dtype)
        shape = [m.shape[0]] + [1] * (x.dim() - 1)
        shape[channel_dim] = m.shape[1]
        return (x * m.view(shape), *args[1:])

    return hook


def _depth_hook(d: torch.Tensor, out_channels: int, kind: str):
    def hook(module, args, kwargs, output):
        """The block's output y mixed with its identity path: (1 - d) * x_id + d * y, d [B] per sample, in the output's
        own form (tensor, tuple or ``.sample``)."""
        x = args[0] if args else kwargs["hidden_states"]
        x_id = DEPTH_KINDS[kind].identity(x, out_channels)
        y = output[0] if isinstance(output, tuple) else (output.sample if hasattr(output, "sample") else output)
        dd = _per_sample(d, y.shape[0]).to(y.device, y.dtype).view(-1, *([1] * (y.dim() - 1)))
        mixed = (1 - dd) * x_id + dd * y
        if isinstance(output, tuple):
            return (mixed, *output[1:])
        if hasattr(output, "sample"):
            output.sample = mixed
            return output
        return mixed

    return hook


@contextmanager
def gated(unet, spec: GateSpec, vector: torch.Tensor) -> Iterator[None]:
    """Within the block, ``unet`` runs with architecture ``vector`` [B, spec.dim] (soft or hard values)."""
    if vector.dim() == 1:
        vector = vector.unsqueeze(0)
    widths, depth = spec.split(vector)
    modules = dict(unet.named_modules())
    handles = []
    try:
        for g, w in zip(spec.width, widths):
            target, dim = WIDTH_KINDS[g.kind].gated_input(modules[g.module])
            handles.append(target.register_forward_pre_hook(_channel_pre_hook(w, g.per_gate, dim)))
        for j, dg in enumerate(spec.depth):
            handles.append(modules[dg.module].register_forward_hook(
                _depth_hook(depth[:, j], dg.out_channels, dg.kind), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def hard(vector: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Binarize an architecture vector (>= threshold keeps): [..., D] -> [..., D] of 0 / 1 in its dtype."""
    return (vector >= threshold).to(vector.dtype)
