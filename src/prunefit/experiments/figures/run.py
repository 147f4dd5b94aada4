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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from prunefit.config.schema import GenerateConfig, SamplerConfig
from prunefit.data.prompts import PromptRecord, read_prompt_file
from prunefit.errors import ConfigError, DataError, ModelLoadError
from prunefit.experiments.figures.config import ROLES, FigureModel, FiguresConfig, model_slug
from prunefit.experiments.figures.report import display_size, figure_page, write_figure
from prunefit.generation.grid import GridStyle, labelled_grid
from prunefit.pruning.resolve import resolve_model
from prunefit.recipes import generate


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
        """What the run did, for the console: images rendered and reused, figure, cells file, page."""
        return [f"rendered {sum(self.generated.values())} image(s), reused {sum(self.skipped.values())}",
                f"figure: {self.figure} ({self.size[0]}x{self.size[1]})", f"cells: {self.sidecar}",
                f"page: {self.html}"]

    @property
    def generated(self) -> dict[str, int]:
        """Images rendered, by row."""
        return {r.name: r.generated for r in self.rows}

    @property
    def skipped(self) -> dict[str, int]:
        """Images reused from an earlier run, by row."""
        return {r.name: r.skipped for r in self.rows}


def figure_model_kind(m: FigureModel, base_model: str) -> tuple[str, str]:
    """(kind, path) of a figure model: ``auto`` asks ``pruning.resolve`` (a row folder gives the model it holds)."""
    if m.kind != "auto":
        return m.kind, m.path
    try:
        ref = resolve_model(m.path, base_model)
    except ModelLoadError as exc:
        raise ConfigError(f"figure model {m.name!r}: {exc}") from None
    kind = {"dense": "pipeline", "expert": "expert", "routed": "routed"}[ref.loads]
    return kind, ref.expert or ref.prune_dir or ref.base


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
    where = {"pipeline": {"model": row.path}, "expert": {"model": row.base_model, "expert": row.path},
             "routed": {"model": row.base_model, "experts": row.path}}[row.kind]
    cfg = GenerateConfig(output_dir=str(row.run_dir), prompt_file=prompt_file, max_prompts=limit, seed=seed,
                         dtype=dtype, device=device, grid_max_images=0, sampler=sampler, **where)
    res = generate.main(cfg)
    row.generated, row.skipped = res.generated, res.skipped


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


def render_figure(models: list[FigureModel], prompt_file: str | Path, out_dir: str | Path,
                  sampler: Optional[SamplerConfig] = None, erased: Optional[list[str]] = None,
                  base_model: str = "toyworld", seed: int = 0, max_prompts: Optional[int] = None,
                  style: GridStyle = GridStyle(), device: str = "auto", dtype: str = "float32") -> FiguresResult:
    """Generate ``models`` x the prompts of ``prompt_file`` (cached per model and prompt under
    ``out_dir/models/<slug>/``) and write figure.png, figure.json and index.html into ``out_dir``."""
    from PIL import Image

    cfg = FiguresConfig(models=list(models), prompt_file=str(prompt_file), output_dir=str(out_dir), erased=erased,
                        base_model=base_model, seed=seed, max_prompts=max_prompts, device=device, dtype=dtype,
                        sampler=sampler or SamplerConfig(), cell=style.cell, label_width=style.label_width,
                        caption_lines=style.caption_lines, font_size=style.font_size)
    out = Path(out_dir)
    records = read_figure_prompts(cfg.prompt_file, max_prompts)
    rows = [ModelRow(m.name, model_slug(m.name), *figure_model_kind(m, m.base_model or base_model),
                     out / "models" / model_slug(m.name), base_model=m.base_model or base_model)
            for m in models]  # all paths checked before generating
    for row in rows:
        _generate_row(row, cfg.prompt_file, max_prompts, cfg.sampler, seed, cfg.device, dtype)
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
    page = figure_page(f"{Path(prompt_file).name}: {len(rows)} models x {len(records)} prompts", rows, records, cells,
                 marks, display_size(max(images[0][0].size)))
    write_figure(out, sheet, sidecar, page)
    return FiguresResult(output_dir=out, figure=out / "figure.png", sidecar=out / "figure.json",
                         html=out / "index.html", size=sheet.size, rows=rows)


def main(cfg: FiguresConfig) -> FiguresResult:
    """Run ``prunefit experiment figures`` for ``cfg``."""
    from prunefit.config.load import save_resolved_config

    result = render_figure(cfg.models, cfg.prompt_file, cfg.output_dir, sampler=cfg.sampler, erased=cfg.erased,
                           base_model=cfg.base_model, seed=cfg.seed, max_prompts=cfg.max_prompts, style=cfg.style(),
                           device=cfg.device, dtype=cfg.dtype)
    save_resolved_config(cfg, result.output_dir)
    return result

