"""Capture the 9 block outputs of a UNet (4 down, mid, 4 up) for feature distillation, scoped by ``with``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def block_paths(unet) -> list[str]:
    return ([f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
            + (["mid_block"] if unet.mid_block is not None else [])
            + [f"up_blocks.{i}" for i in range(len(unet.up_blocks))])


@contextmanager
def capture_features(unet) -> Iterator[list[torch.Tensor]]:
    """Yields a list filled, during forwards inside the block, with each block's hidden-state output
    (down blocks return (hidden, residuals): the hidden part is taken). Hooks are removed on exit."""
    feats: list[torch.Tensor] = []
    handles = []

    def hook(module, args, output):
        feats.append(output[0] if isinstance(output, tuple) else output)

    try:
        for path in block_paths(unet):
            handles.append(unet.get_submodule(path).register_forward_hook(hook))
        yield feats
    finally:
        for h in handles:
            h.remove()
