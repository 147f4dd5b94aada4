"""Write a figure from its generated cells: figure.png, figure.json (every cell as text) and index.html."""

from __future__ import annotations

import html
import json
from pathlib import Path

from prunefit.utils.io import atomic_write_bytes


def display_size(native: int, least: int = 160) -> int:
    """Pixels an image is shown at in index.html: its own size, or the largest whole multiple of it up to
    ``least`` for small images (the toy world's 32 px -> 160 px, pixelated)."""
    return native * max(1, least // native)


def figure_page(title: str, rows: list, records: list, cells: list[dict], marks: list[bool], display: int) -> str:
    """index.html: the grid at full size (``rows``: names of the models, ``records``: the prompts)."""
    esc = html.escape
    head = "".join(f'<th class="{"erased" if m else ""}">{"<span class=mark>× erased</span><br>" if m else ""}'
                   f"{esc(rec.prompt)}<br><code>{esc(rec.id)}</code></th>" for rec, m in zip(records, marks))
    body = []
    for r, row in enumerate(rows):
        tds = "".join(f'<td class="{"erased" if c["erased"] else ""}"><img src="{esc(c["image"])}" width="{display}" '
                      f'height="{display}" alt="{esc(row.name)}: {esc(c["prompt"])}" title="seed {c["seed"]}"></td>'
                      for c in cells if c["row"] == r)
        body.append(f"<tr><th class=model>{esc(row.name)}</th>{tds}</tr>")
    style = ("body{font-family:sans-serif;margin:16px}table{border-collapse:separate;border-spacing:6px}"
             f"th{{font-weight:normal;vertical-align:bottom;text-align:left;width:{display}px;font-size:14px}}"
             "th.model{vertical-align:middle;font-weight:bold;width:auto;max-width:170px}"
             "td{padding:0}td.erased{outline:3px solid #c81e1e}img{display:block;image-rendering:pixelated}"
             ".mark{color:#c81e1e;font-weight:bold}code{color:#666;font-size:11px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{esc(title)}</title><style>{style}</style>"
            f"</head><body><h3>{esc(title)}</h3><table><tr><th></th>{head}</tr>\n" + "\n".join(body)
            + "\n</table></body></html>\n")


def write_figure(out: Path, sheet, sidecar: dict, page: str) -> None:
    """figure.png (``sheet``), figure.json (``sidecar``) and index.html (``page``) in ``out``, each atomically."""
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out / "figure.png", buf.getvalue())
    atomic_write_bytes(out / "figure.json", (json.dumps(sidecar, indent=1) + "\n").encode())
    atomic_write_bytes(out / "index.html", page.encode())

