"""Lay images out as grids (PIL): a contact sheet with optional captions, and a labelled models x prompts sheet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont


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


# ---------------------------------------------------------------- labelled comparison grid

_FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "LiberationSans-Regular.ttf",
               "Arial.ttf")
MARK_COLOUR = (200, 30, 30)


@dataclass(frozen=True)
class GridStyle:
    """Geometry of a labelled grid. The sheet is ``label_width + cols * cell + (cols + 1) * pad`` wide and
    ``header_height + rows * cell + (rows + 1) * pad`` tall, whatever the labels say (long text is wrapped,
    then cut with an ellipsis), so its size is a pure function of the grid's shape."""

    cell: int = 192
    """Side of one image cell in pixels (images are scaled to it: nearest-neighbour up, Lanczos down)."""
    pad: int = 6
    label_width: int = 170
    """Width of the model-name column on the left."""
    caption_lines: int = 4
    """Caption lines above each column (plus one line for the erased marker)."""
    font_size: int = 15

    def __post_init__(self) -> None:
        if min(self.cell, self.label_width, self.caption_lines, self.font_size) < 1 or self.pad < 0:
            raise ValueError("grid style: cell, label_width, caption_lines and font_size must be >= 1, pad >= 0")

    @property
    def line_height(self) -> int:
        """Pixel height of one caption line."""
        return self.font_size + self.font_size // 3

    @property
    def header_height(self) -> int:
        """The marker line, the caption lines and a pad."""
        return (self.caption_lines + 1) * self.line_height + self.pad

    def sheet_size(self, rows: int, cols: int) -> tuple[int, int]:
        """(width, height) in pixels of a sheet of ``rows`` x ``cols`` cells with labels, header and padding."""
        return (self.label_width + cols * self.cell + (cols + 1) * self.pad,
                self.header_height + rows * self.cell + (rows + 1) * self.pad)


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A TrueType font of ``size`` px when one is installed (DejaVu Sans first), else Pillow's own."""
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        return ImageFont.load_default()


def _chunks(word: str, fits) -> list[str]:
    """``word`` cut into the longest pieces that fit (a word wider than the column)."""
    out = []
    while word:
        k = len(word)
        while k > 1 and not fits(word[:k]):
            k -= 1
        out.append(word[:k])
        word = word[k:]
    return out


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px (over-long words are cut), at most
    ``max_lines`` of them; text that does not fit ends in an ellipsis."""
    fits = lambda s: font.getlength(s) <= width  # noqa: E731
    lines: list[str] = []
    for word in text.split():
        for piece in _chunks(word, fits):
            if lines and fits(f"{lines[-1]} {piece}"):
                lines[-1] = f"{lines[-1]} {piece}"
            else:
                lines.append(piece)
    if len(lines) > max_lines:
        dots = "…" if isinstance(font, ImageFont.FreeTypeFont) else "..."  # the bitmap font is Latin-1 only
        last = lines[max_lines - 1]
        while last and not fits(last + dots):
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + dots]
    return lines


def _fit(img: Image.Image, cell: int) -> Image.Image:
    img = img.convert("RGB")
    if img.size == (cell, cell):
        return img
    up = max(img.size) <= cell
    return img.resize((cell, cell), Image.NEAREST if up else Image.LANCZOS)


def labelled_grid(images: Sequence[Sequence[Image.Image]], row_labels: Sequence[str], col_labels: Sequence[str],
                  marked: Optional[Sequence[bool]] = None, marker: str = "× erased",
                  style: GridStyle = GridStyle()) -> Image.Image:
    """A comparison sheet: ``images[r][c]`` in row r (``row_labels[r]`` on the left) and column c
    (``col_labels[c]`` wrapped on top); columns with ``marked[c]`` get ``marker`` in red above the caption and a
    red frame. The size is ``style.sheet_size(rows, cols)``."""
    rows, cols = len(images), len(col_labels)
    if rows == 0 or cols == 0:
        raise ValueError("labelled_grid needs at least one row and one column")
    if len(row_labels) != rows or any(len(r) != cols for r in images):
        raise ValueError(f"labelled_grid: {rows} row labels and {cols} images per row expected")
    marked = list(marked) if marked is not None else [False] * cols
    s, font = style, label_font(style.font_size)
    sheet = Image.new("RGB", s.sheet_size(rows, cols), "white")
    draw = ImageDraw.Draw(sheet)
    x0, y0 = s.label_width + s.pad, s.header_height + s.pad
    for c, text in enumerate(col_labels):
        x = x0 + c * (s.cell + s.pad)
        lines = wrap_text(text, font, s.cell - s.pad, s.caption_lines)  # a gap before the next caption
        top = s.header_height - s.pad - len(lines) * s.line_height  # captions sit just above their column
        if marked[c]:
            draw.text((x, top - s.line_height), marker, fill=MARK_COLOUR, font=font)
        for n, line in enumerate(lines):
            draw.text((x, top + n * s.line_height), line, fill="black", font=font)
    for r, label in enumerate(row_labels):
        y = y0 + r * (s.cell + s.pad)
        lines = wrap_text(label, font, s.label_width - 2 * s.pad, max(1, s.cell // s.line_height))
        top = y + (s.cell - len(lines) * s.line_height) // 2
        for n, line in enumerate(lines):
            draw.text((s.pad, top + n * s.line_height), line, fill="black", font=font)
        for c in range(cols):
            x = x0 + c * (s.cell + s.pad)
            sheet.paste(_fit(images[r][c], s.cell), (x, y))
            if marked[c] and s.pad:
                w = max(1, s.pad // 2)
                draw.rectangle([x - w, y - w, x + s.cell + w - 1, y + s.cell + w - 1], outline=MARK_COLOUR, width=w)
    return sheet
