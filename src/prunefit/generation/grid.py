"""Lay images out as a contact-sheet grid (PIL), optionally with a caption strip under each image."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from PIL import Image, ImageDraw


def image_grid(images: Sequence[Image.Image], cols: Optional[int] = None, labels: Optional[Sequence[str]] = None,
               cell: Optional[int] = None, pad: int = 2) -> Image.Image:
    """A grid of ``images`` (row-major), each resized to ``cell`` px; ``labels`` are drawn beneath."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell = cell or max(images[0].size)
    label_h = 12 if labels else 0
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad + label_h) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell + pad), pad + r * (cell + pad + label_h)
        sheet.paste(img.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        if labels:
            text = labels[i]
            max_chars = max(1, cell // 6)
            draw.text((x, y + cell), text if len(text) <= max_chars else text[: max_chars - 1] + "…", fill="black")
    return sheet
