"""Capture the 9 block outputs of a UNet (4 down, mid, 4 up) for feature distillation, scoped by ``with``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch

_KEPT = "_prunefit_feature_capture"


def block_paths(unet) -> list[str]:
    """Module paths of the UNet's blocks whose outputs are captured: down blocks, mid block, up blocks."""
    return ([f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
            + (["mid_block"] if unet.mid_block is not None else [])
            + [f"up_blocks.{i}" for i in range(len(unet.up_blocks))])


def _block_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class _KeptHooks:
    """Block hooks registered once for good; ``sink`` is the list a ``capture_features`` block is filling, or None."""

    def __init__(self) -> None:
        self.sink: Optional[list[torch.Tensor]] = None
        self.handles: list = []


def keep_feature_hooks(unet) -> None:
    """Register the block hooks once and for good, before ``unet.forward`` is compiled: torch.compile does not
    notice hooks added or removed around a compiled forward (its guards only count them), so ``capture_features``
    then switches these kept hooks on and off instead (a compiled forward guards on that switch)."""
    if getattr(unet, _KEPT, None) is not None:
        return
    kept = _KeptHooks()

    def hook(module, args, output):
        """Append the block's hidden-state output [B, C, h, w] to the active capture, if any."""
        if kept.sink is not None:
            kept.sink.append(_block_output(output))

    kept.handles = [unet.get_submodule(path).register_forward_hook(hook) for path in block_paths(unet)]
    object.__setattr__(unet, _KEPT, kept)


def drop_feature_hooks(unet) -> None:
    """Remove the kept hooks of ``unet`` (a deep copy shares them with its original: drop, then keep its own)."""
    kept = getattr(unet, _KEPT, None)
    if kept is None:
        return
    ids = {h.id for h in kept.handles}
    for path in block_paths(unet):
        hooks = unet.get_submodule(path)._forward_hooks
        for hid in ids & set(hooks):
            del hooks[hid]
    object.__delattr__(unet, _KEPT)


@contextmanager
def capture_features(unet) -> Iterator[list[torch.Tensor]]:
    """Yields a list filled, during forwards inside the block, with each block's hidden-state output
    (down blocks return (hidden, residuals): the hidden part is taken). Hooks are removed (kept hooks: switched
    off) on exit."""
    feats: list[torch.Tensor] = []
    kept = getattr(unet, _KEPT, None)
    if kept is not None:
        kept.sink = feats
        try:
            yield feats
        finally:
            kept.sink = None
        return
    handles = []

    def hook(module, args, output):
        """Append the block's hidden-state output [B, C, h, w] to the captured list."""
        feats.append(_block_output(output))

    try:
        for path in block_paths(unet):
            handles.append(unet.get_submodule(path).register_forward_hook(hook))
        yield feats
    finally:
        for h in handles:
            h.remove()
