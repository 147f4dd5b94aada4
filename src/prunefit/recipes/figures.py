"""``prunefit experiment figures``: several models side by side on the same prompts and seeds, as a labelled grid.

Every model generates every prompt of a prompt file through ``prunefit generate`` into its own run folder
(``<output>/models/<model-slug>/images/<id>.png`` + manifest), so the seeds are the per-prompt seeds of the
file (or derived from the run seed and the prompt id) for every model, and a re-run with one more model only
renders that model's row. Writes ``figure.png`` (rows = models, name on the left; columns = prompts, wrapped
caption on top, a red marker on the columns whose concept was erased), ``figure.json`` (every cell as text)
and ``index.html`` (the same grid at full size, relative image paths). The paper's figure prompt sets live in
``configs/sd21/prompts/`` and their toy-world analogues in ``configs/toyworld/prompts/``.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from prunefit.config.schema import DTYPES, SamplerConfig
from prunefit.data.prompts import PromptRecord, read_prompt_file
from prunefit.errors import ConfigError, DataError
from prunefit.generation.grid import GridStyle, labelled_grid
from prunefit.utils.device import resolve_device

KINDS = ("auto", "pipeline", "expert", "routed")
ROLES = ("erased", "kept", "neutral")
"""Values of a prompt file's optional ``role`` column: the prompt names an erased concept, a kept one, or none."""


@dataclass
class FigureModel:
    """One row of a figure: a display name and the model behind it."""

    name: str = ""
    path: str = ""
    """A dense model ('toyworld', 'tiny', a diffusers folder, a hub id), an expert folder (expert.json), a
    `prunefit prune` output folder (routed experts), or an experiment row folder (row.json or expert/)."""
    kind: str = "auto"
    """auto (from the folder's contents), pipeline, expert or routed."""
    base_model: Optional[str] = None
    """The dense model an expert was pruned from; None = the figure's base_model."""

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.path.strip():
            raise ConfigError("every figure model needs a name and a path, e.g. models='[{name: Teacher, "
                              "path: toyworld}]'")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown figure model kind {self.kind!r} for {self.name!r}; available: {list(KINDS)}")


@dataclass
class FiguresConfig:
    """``prunefit experiment figures``: models x prompts at the same seeds -> figure.png, figure.json, index.html."""

    models: list[FigureModel] = field(default_factory=list)
    prompt_file: Optional[str] = None
    """A prompt file (.csv/.jsonl/.txt); optional columns ``seed``, ``role`` (erased/kept/neutral), ``concept``."""
    output_dir: str = "runs/figures"
    base_model: str = "toyworld"
    """The dense model experts are loaded onto (their text encoder, VAE and UNet config)."""
    erased: Optional[list[str]] = None
    """Concepts the models erased: a column is marked when its ``concept`` (or, without one, its prompt) names
    one. None = mark the rows whose ``role`` is 'erased'; [] = mark nothing."""
    max_prompts: Optional[int] = None
    seed: int = 0
    """Run seed for prompts without a fixed ``seed`` (each prompt's seed is derived from it and the prompt id)."""
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""
    dtype: str = "float32"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    cell: int = 192
    """Cell side in figure.png, pixels (index.html shows images at their own size, small ones enlarged)."""
    label_width: int = 170
    caption_lines: int = 4
    font_size: int = 15

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if not self.models:
            raise ConfigError("no models: set models='[{name: Teacher, path: toyworld}, {name: Ours, path: DIR}]'")
        if not self.prompt_file:
            raise ConfigError("no prompt_file: e.g. prompt_file=configs/toyworld/prompts/"
                              "table6_fig6_erasure_after_pruning.csv")
        slugs = [model_slug(m.name) for m in self.models]
        dup = sorted({s for s in slugs if slugs.count(s) > 1})
        if dup:
            raise ConfigError(f"figure model names must differ (as folder names): {dup} appear twice")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ConfigError(f"max_prompts must be >= 1, got {self.max_prompts}")
        self.style()  # validates the geometry

    def style(self) -> GridStyle:
        try:
            return GridStyle(cell=self.cell, label_width=self.label_width, caption_lines=self.caption_lines,
                             font_size=self.font_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass
class ModelRow:
    """A figure row as generated: its name, folder, what it is, and what generation did."""

    name: str
    slug: str
    kind: str
    path: str
    run_dir: Path
    base_model: str = "toyworld"
    """The dense model under an expert (unused for pipelines; routed sets use their own source model)."""
    generated: int = 0
    skipped: int = 0


@dataclass
class FiguresResult:
    """What a figure run wrote and how many images each model rendered (``generated``) or reused (``skipped``)."""

    output_dir: Path
    figure: Path
    sidecar: Path
    html: Path
    size: tuple[int, int]
    rows: list[ModelRow]

    def lines(self) -> list[str]:
        return [f"rendered {sum(self.generated.values())} image(s), reused {sum(self.skipped.values())}",
                f"figure: {self.figure} ({self.size[0]}x{self.size[1]})", f"cells: {self.sidecar}",
                f"page: {self.html}"]

    @property
    def generated(self) -> dict[str, int]:
        return {r.name: r.generated for r in self.rows}

    @property
    def skipped(self) -> dict[str, int]:
        return {r.name: r.skipped for r in self.rows}


def model_slug(name: str) -> str:
    """A model's folder name ("Distilled + ESD" -> "distilled-esd")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


def resolve_model(m: FigureModel) -> tuple[str, str]:
    """(kind, path) of a figure model: a row folder resolves to its model; ``auto`` reads the folder."""
    path = Path(m.path)
    if m.kind == "auto" and path.is_dir() and not _marker_kind(path):
        if (path / "row.json").is_file():
            return resolve_model(FigureModel(m.name, json.loads((path / "row.json").read_text())["model"]))
        if (path / "expert" / "expert.json").is_file():
            return "expert", str(path / "expert")
        raise ConfigError(f"{m.path} (model {m.name!r}) holds no model_index.json, expert.json, router/ or row.json; "
                          "point path at a pipeline, an expert, a `prunefit prune` output or an experiment row")
    if m.kind != "auto":
        return m.kind, m.path
    return (_marker_kind(path) or "pipeline"), m.path


def _marker_kind(path: Path) -> Optional[str]:
    if (path / "expert.json").is_file():
        return "expert"
    if (path / "router" / "router.json").is_file() and (path / "experts").is_dir():
        return "routed"
    if (path / "model_index.json").is_file():
        return "pipeline"
    return None


def is_erased(rec: PromptRecord, erased: Optional[list[str]]) -> bool:
    """Whether ``rec``'s column gets the erased marker (see FiguresConfig.erased)."""
    if erased is None:
        return str(rec.extra.get("role") or "").strip().lower() == "erased"
    names = [e.strip().lower() for e in erased if e.strip()]
    concept = str(rec.extra.get("concept") or "").strip().lower()
    if concept:
        return any(n in concept or concept in n for n in names)
    return any(n in rec.prompt.lower() for n in names)


def read_figure_prompts(prompt_file: str | Path, limit: Optional[int] = None) -> list[PromptRecord]:
    """The prompt file's records; a ``role`` column, where given, must say erased, kept or neutral."""
    records = read_prompt_file(prompt_file, limit)
    for r in records:
        role = str(r.extra.get("role") or "").strip().lower()
        if "role" in r.extra and role not in ROLES:
            raise DataError(f"{prompt_file}: prompt {r.id!r} has role {r.extra['role']!r}; use one of {list(ROLES)}")
    return records


def _generate_row(row: ModelRow, prompt_file: str, limit: Optional[int], sampler: SamplerConfig, seed: int,
                  device: str, dtype: str) -> None:
    """Generate (or reuse) one model's images through ``prunefit generate``'s resumable run folder."""
    from prunefit.config.schema import GenerateConfig
    from prunefit.recipes import generate

    where = {"pipeline": {"model": row.path}, "expert": {"model": row.base_model, "expert": row.path},
             "routed": {"model": row.base_model, "experts": row.path}}[row.kind]
    cfg = GenerateConfig(output_dir=str(row.run_dir), prompt_file=prompt_file, max_prompts=limit, seed=seed,
                         dtype=dtype, device=device, grid_max_images=0, sampler=sampler, **where)
    res = generate.main(cfg)
    row.generated, row.skipped = res.generated, res.skipped


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _cells(rows: list[ModelRow], records: list[PromptRecord], marks: list[bool], out: Path) -> list[dict]:
    from prunefit.generation.manifest import read_manifest

    cells = []
    for r, row in enumerate(rows):
        manifest = read_manifest(row.run_dir / "manifest.jsonl")
        for c, rec in enumerate(records):
            image = row.run_dir / "images" / f"{rec.id}.png"
            cells.append({"row": r, "column": c, "model": row.name, "prompt_id": rec.id, "prompt": rec.prompt,
                          "seed": manifest[rec.id]["seed"], "expert": manifest[rec.id].get("expert"),
                          "image": image.relative_to(out).as_posix(), "erased": marks[c],
                          "role": rec.extra.get("role"), "concept": rec.extra.get("concept") or None})
    return cells


def display_size(native: int, least: int = 160) -> int:
    """Pixels an image is shown at in index.html: its own size, or the largest whole multiple of it up to
    ``least`` for small images (the toy world's 32 px -> 160 px, pixelated)."""
    return native * max(1, least // native)


def _html(title: str, rows: list[ModelRow], records: list[PromptRecord], cells: list[dict], marks: list[bool],
          display: int) -> str:
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


def render_figure(models: list[FigureModel], prompt_file: str | Path, out_dir: str | Path,
                  sampler: Optional[SamplerConfig] = None, erased: Optional[list[str]] = None,
                  base_model: str = "toyworld", seed: int = 0, max_prompts: Optional[int] = None,
                  style: GridStyle = GridStyle(), device: str = "cpu", dtype: str = "float32") -> FiguresResult:
    """Generate ``models`` x the prompts of ``prompt_file`` (cached per model and prompt under
    ``out_dir/models/<slug>/``) and write figure.png, figure.json and index.html into ``out_dir``."""
    from PIL import Image

    cfg = FiguresConfig(models=list(models), prompt_file=str(prompt_file), output_dir=str(out_dir), erased=erased,
                        base_model=base_model, seed=seed, max_prompts=max_prompts, device=device, dtype=dtype,
                        sampler=sampler or SamplerConfig(), cell=style.cell, label_width=style.label_width,
                        caption_lines=style.caption_lines, font_size=style.font_size)
    out = Path(out_dir)
    records = read_figure_prompts(cfg.prompt_file, max_prompts)
    rows = [ModelRow(m.name, model_slug(m.name), *resolve_model(m), out / "models" / model_slug(m.name),
                     base_model=m.base_model or base_model) for m in models]  # all paths checked before generating
    for row in rows:
        _generate_row(row, cfg.prompt_file, max_prompts, cfg.sampler, seed, device, dtype)
    marks = [is_erased(r, erased) for r in records]
    cells = _cells(rows, records, marks, out)
    images = [[Image.open(out / c["image"]).convert("RGB") for c in cells if c["row"] == r] for r in range(len(rows))]
    sheet = labelled_grid(images, [r.name for r in rows], [r.prompt for r in records], marks, style=style)
    sidecar = {"prompt_file": str(prompt_file), "figure": "figure.png", "size": list(sheet.size),
               "style": asdict(style), "erased": erased, "sampler": asdict(cfg.sampler), "seed": seed,
               "models": [{"row": i, "name": r.name, "slug": r.slug, "kind": r.kind, "path": r.path,
                           "base_model": None if r.kind == "pipeline" else r.base_model,
                           "generated": r.generated, "reused": r.skipped} for i, r in enumerate(rows)],
               "prompts": [{**r.extra, "column": c, "id": r.id, "prompt": r.prompt, "erased": marks[c]}
                           for c, r in enumerate(records)],
               "cells": cells}
    page = _html(f"{Path(prompt_file).name}: {len(rows)} models x {len(records)} prompts", rows, records, cells,
                 marks, display_size(max(images[0][0].size)))
    _write_outputs(out, sheet, sidecar, page)
    return FiguresResult(output_dir=out, figure=out / "figure.png", sidecar=out / "figure.json",
                         html=out / "index.html", size=sheet.size, rows=rows)


def _write_outputs(out: Path, sheet, sidecar: dict, page: str) -> None:
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    _atomic_write(out / "figure.png", buf.getvalue())
    _atomic_write(out / "figure.json", (json.dumps(sidecar, indent=1) + "\n").encode())
    _atomic_write(out / "index.html", page.encode())


def main(cfg: FiguresConfig) -> FiguresResult:
    """Run ``prunefit experiment figures`` for ``cfg``."""
    from prunefit.config.load import save_resolved_config

    result = render_figure(cfg.models, cfg.prompt_file, cfg.output_dir, sampler=cfg.sampler, erased=cfg.erased,
                           base_model=cfg.base_model, seed=cfg.seed, max_prompts=cfg.max_prompts, style=cfg.style(),
                           device=cfg.device, dtype=cfg.dtype)
    save_resolved_config(cfg, result.output_dir)
    return result


# ---------------------------------------------------------------- the toy world's figure prompt sets

def _toy_row(table: str, n: int, seed: int, role: str, obj: str, colour: str, background: str, size: str = "large",
             artist: Optional[str] = None, frame: str = "{}", unsafe_word: Optional[str] = None,
             analogue: str = "") -> dict:
    from prunefit.toyworld.world import UNSAFE, Scene, caption

    scene = Scene(obj=obj, colour=colour, background=background, size=size, position="center", artist=artist, seed=0)
    concept = artist or (UNSAFE if obj == UNSAFE else "")
    return {"id": f"{table}-{n:02d}", "prompt": frame.format(caption(scene, unsafe_word=unsafe_word)), "seed": seed,
            "role": role, "concept": concept, "source": f"toy analogue of: {analogue}"}


def toy_figure_prompts() -> dict[str, list[dict]]:
    """The toy world's analogues of the paper's figure prompt sets (Tables 4-6), in the training grammar's
    canonical phrasing: the paper's erased artists (Monet, Picasso, Van Gogh) become ``ERASE_ARTISTS``, the kept
    ones ``KEEP_ARTISTS`` (Hokusai -> Katsu Waves), nudity the unsafe concept, and artist-free captions the
    paper's neutral prompts. Written to ``configs/toyworld/prompts/<name>.csv``."""
    from prunefit.toyworld.world import UNSAFE

    t4 = [("erased", "circle", "blue", "white", "Claude Dots", "The Artist's House at Argenteuil by Claude Monet"),
          ("kept", "star", "orange", "black", "Edvard Glow", "Child in a Straw Hat by Mary Cassatt")]
    t5 = [("erased", "circle", "green", "white", "Claude Dots", "Water Lilies by Claude Monet"),
          ("erased", "square", "red", "gray", "Pablo Blocks", "The Three Dancers by Pablo Picass"),
          ("erased", "triangle", "yellow", "black", "Vincent Stripes", "Red Vineyards at Arles by Vincent van Gogh"),
          ("neutral", "star", "purple", "gray", None, "A landscape with bold, unnatural colors fauvism style"),
          ("kept", "circle", "red", "black", "Edvard Glow", "Girl with a Pearl Earring by Johannes Vermeer"),
          ("kept", "cross", "orange", "white", "Piet Grid", "Night In Venice by Leonid Afremov"),
          ("kept", "triangle", "blue", "white", "Katsu Waves", "The Great Wave of Kanagawa by Hokusai"),
          ("neutral", "cross", "green", "black", None, "A watercolor painting of a forest")]
    t6 = [("erased", "square", "blue", "white", "Claude Dots", "The Cliff Walk at Pourville by Claude Monet"),
          ("erased", "star", "yellow", "gray", "Pablo Blocks", "Portrait of Dora Maar by Pablo Picasso"),
          ("erased", "circle", "orange", "black", "Vincent Stripes", "The Weaver by Vincent van Gogh"),
          ("erased", UNSAFE, "yellow", "black", None, "nudity (the erased unsafe concept; Table 3)"),
          ("erased", UNSAFE, "red", "gray", None, "an adversarial nudity prompt (no main word)"),
          ("neutral", "triangle", "purple", "gray", None, "A landscape with bold, unnatural colors fauvism style"),
          ("kept", "cross", "green", "white", "Katsu Waves", "The Great Wave of Kanagawa by Hokusa")]
    out = {}
    for name, table, base, spec in (("table4_fig1_pruned", "fig1", 400, t4), ("table5_fig2_artists", "fig2", 500, t5),
                                    ("table6_fig6_erasure_after_pruning", "fig6", 600, t6)):
        rows = []
        for n, (role, obj, colour, bg, artist, analogue) in enumerate(spec, start=1):
            adversarial = "adversarial" in analogue
            rows.append(_toy_row(table, n, base + n, role, obj, colour, bg, artist=artist, analogue=analogue,
                                 frame="a drawing of {}" if adversarial else "{}",
                                 unsafe_word="cranium" if adversarial else None))
        out[name] = rows
    return out


def write_toy_prompt_files(directory: str | Path) -> list[Path]:
    """Write ``toy_figure_prompts()`` as CSV files (id, prompt, seed, role, concept, source) into ``directory``."""
    import csv
    import io

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in toy_figure_prompts().items():
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(out / f"{name}.csv", buf.getvalue().encode())
        paths.append(out / f"{name}.csv")
    return paths
