"""Turn several results.json files into one comparison table (markdown + CSV) and a side-by-side grid."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from prunefit.errors import DataError
from prunefit.generation.grid import image_grid

DEFAULT_COLUMNS = ("toyworld/unsafe_rate", "toyworld/target_artist_rate", "toyworld/fidelity", "toyworld/fjd",
                   "nudity_asr/asr", "fid/fid", "clip_score/clip_score", "artist/zero_shot_accuracy",
                   "macs/unet_gmacs", "latency/unet_ms/b1", "attack/pre_asr", "attack/asr", "attack/asr_soft")


def load_results(paths: Sequence[str | Path]) -> list[tuple[str, dict]]:
    """(run name, results document) per results file or run folder."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            p = p / "results.json"
        if not p.is_file():
            raise DataError(f"results file not found: {p}")
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError:
            raise DataError(f"{p} is not valid JSON") from None
        out.append((p.parent.name, doc))
    return out


def flat_values(doc: dict) -> dict[str, float]:
    """A results document's values keyed ``metric/value``."""
    return {f"{m}/{k}": v for m, entry in doc.get("metrics", {}).items() for k, v in entry["values"].items()}


def table(results: list[tuple[str, dict]], columns: Optional[Sequence[str]] = None,
          names: Optional[Sequence[str]] = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows (method | metric ...) with the columns present in at least one file."""
    flats = [flat_values(doc) for _, doc in results]
    cols = [c for c in (columns or DEFAULT_COLUMNS) if any(c in f for f in flats)]
    rows = []
    for i, ((name, _), flat) in enumerate(zip(results, flats)):
        label = names[i] if names else name
        rows.append([label] + [f"{flat[c]:.4g}" if c in flat else "–" for c in cols])
    return ["method", *cols], rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``header`` and ``rows``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def write_report(result_paths: Sequence[str | Path], output: Path, names: Optional[Sequence[str]] = None,
                 columns: Optional[Sequence[str]] = None, grid_images: int = 8) -> dict[str, Path]:
    """Write report.md and report.csv comparing the results files (and a side-by-side image grid) into ``output``;
    returns the written files by kind."""
    results = load_results(result_paths)
    if names and len(names) != len(results):
        raise DataError(f"{len(names)} names given for {len(results)} results files")
    header, rows = table(results, columns, names)
    output.mkdir(parents=True, exist_ok=True)
    protocols = ["", "## Protocols", ""]
    for (name, doc), row in zip(results, rows):
        protocols.append(f"- **{row[0]}** ({doc.get('run_dir')}, model {doc.get('model')}, n={doc.get('n')}): "
                         + "; ".join(f"{m}: {json.dumps(e['protocol'], sort_keys=True)}"
                                     for m, e in doc.get("metrics", {}).items()))
    md = output / "report.md"
    md.write_text("# Results\n\n" + markdown(header, rows) + "\n".join(protocols) + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    (output / "report.csv").write_text(buf.getvalue())
    files = {"markdown": md, "csv": output / "report.csv"}
    grid = side_by_side([Path(doc["run_dir"]) for _, doc in results if doc.get("run_dir")], grid_images)
    if grid is not None:
        grid.save(output / "grid.png")
        files["grid"] = output / "grid.png"
    return files


def report_lines(results: Sequence[str | Path], output: str | Path = "runs/report",
                 names: Optional[Sequence[str]] = None) -> list[str]:
    """``prunefit report``: write the report (``write_report``) and return what the console shows: the Markdown
    table, then each written file as ``kind: path``."""
    files = write_report(results, Path(output), names=names)
    return [files["markdown"].read_text(), *(f"{kind}: {path}" for kind, path in files.items())]


def side_by_side(run_dirs: Sequence[Path], n: int) -> Optional[Image.Image]:
    """Rows = the first ``n`` image ids common to every run; columns = runs."""
    id_sets = []
    for d in run_dirs:
        imgs = d / "images"
        if not imgs.is_dir():
            return None
        id_sets.append({p.stem for p in imgs.glob("*.png")})
    common = sorted(set.intersection(*id_sets))[:n] if id_sets else []
    if not common:
        return None
    cells = [Image.open(d / "images" / f"{i}.png") for i in common for d in run_dirs]
    return image_grid(cells, cols=len(run_dirs), cell=max(64, cells[0].size[0]))
