"""Read prompt files (txt, csv, jsonl) and inline prompts into ``PromptRecord``s with stable ids.

Formats:
- ``.txt``: one prompt a line; blank lines are skipped; ids are the line's position among prompts.
- ``.csv``: a ``prompt`` column (I2P, the artist CSVs, COCO caption dumps); optional ``id`` (or
  ``case_number``) and ``seed`` / ``evaluation_seed`` columns; other columns are kept as ``extra``.
- ``.jsonl``: one object a line with ``prompt`` and optional ``id`` / ``seed``.
Ids become file names (``images/<id>.png``), so they must be unique and filesystem-safe.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from prunefit.errors import DataError
from prunefit.utils.io import jsonl_lines

MAX_PROMPT_FILE_BYTES = 512 * 1024 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ID_COLUMNS = ("id", "case_number", "image_id")
_SEED_COLUMNS = ("seed", "evaluation_seed", "sd_seed")
RESERVED_COLUMNS = ("prompt", *_ID_COLUMNS, *_SEED_COLUMNS)
"""Columns the reader interprets (prompt, id, seed); any other column is kept as ``extra``."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to generate: its id (the image's file name), text, optional fixed seed, other columns."""

    id: str
    prompt: str
    seed: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)


def _auto_id(i: int) -> str:
    return f"{i:05d}"


def _parse_seed(value: Any, where: str) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        seed = int(float(value))
    except (TypeError, ValueError):
        raise DataError(f"{where}: seed {value!r} is not an integer") from None
    if seed < 0:
        raise DataError(f"{where}: seed {seed} is negative")
    return seed


def _record(i: int, row: dict[str, Any], where: str) -> PromptRecord:
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: missing or empty 'prompt'")
    rid = next((row[c] for c in _ID_COLUMNS if row.get(c) not in (None, "")), None)
    rid = _auto_id(i) if rid is None else str(rid).strip()
    seed = next((_parse_seed(row[c], where) for c in _SEED_COLUMNS if row.get(c) not in (None, "")), None)
    extra = {k: v for k, v in row.items() if k not in ("prompt", *_ID_COLUMNS, *_SEED_COLUMNS)}
    return PromptRecord(id=rid, prompt=prompt.strip(), seed=seed, extra=extra)


def _rows_txt(path: Path) -> Iterable[tuple[str, dict]]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    for n, line in enumerate(ln for ln in lines if ln):
        yield f"{path}: prompt {n + 1}", {"prompt": line}


def _rows_csv(path: Path) -> Iterable[tuple[str, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "prompt" not in reader.fieldnames:
            raise DataError(f"{path}: a CSV prompt file needs a 'prompt' column; found {reader.fieldnames}")
        for n, row in enumerate(reader):
            yield f"{path}: row {n + 2}", row


def _rows_jsonl(path: Path) -> Iterable[tuple[str, dict]]:
    for n, row in jsonl_lines(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {n} must be a JSON object with a 'prompt' key")
        yield f"{path}: line {n}", row


_READERS = {".txt": _rows_txt, ".csv": _rows_csv, ".jsonl": _rows_jsonl}

PROMPT_FORMATS: dict[str, str] = {
    "auto": "by file suffix: .txt lines, .csv with a 'prompt' column, .jsonl objects",
    "lines": "one prompt a line, whatever the suffix",
    "ring-a-bell": "Ring-A-Bell prompts: a CSV with a 'prompt' column (the released sets: prompt, case_number, "
                   "evaluation_seed), else one prompt a line, no header (copies often named .csv)",
    "mma": "MMA-Diffusion CSV: the 'adv_prompt' column (target_prompt etc. kept as extra columns)",
    "i2p": "I2P CSV: 'prompt', seed 'sd_seed' (the Hub's AIML-TUDA/i2p) or 'evaluation_seed', id 'case_number' if "
           "present (+ categories, nudity_percentage, ...)",
    "p4d": "P4D CSV: 'prompt', 'evaluation_seed', 'case_number'",
    "unlearndiffatk": "UnlearnDiffAtk CSV (e.g. nudity.csv): 'prompt', 'evaluation_seed', 'case_number'",
    "artist": "artist CSVs (test_<artist>.csv): 'prompt', 'evaluation_seed', 'case_number', 'artist'/'artists'",
}
"""Named prompt-file formats (``prompt_format``); all CSV formats keep unknown columns as ``extra``."""


def listing() -> list[str]:
    """``prunefit list prompt-formats``: one line per format and what it reads."""
    return [f"{name:15s} {text}" for name, text in PROMPT_FORMATS.items()]


_PROMPT_COLUMN = {"mma": "adv_prompt"}


def _rows_csv_column(column: str):
    def rows(path: Path) -> Iterable[tuple[str, dict]]:
        """(location, row) per CSV row, the prompt read from ``column``."""
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise DataError(f"{path}: expected a {column!r} column for this format; found {reader.fieldnames}")
            for n, row in enumerate(reader):
                row = dict(row)
                row["prompt"] = row.pop(column)
                yield f"{path}: row {n + 2}", row
    return rows


def _has_prompt_header(path: Path) -> bool:
    """Whether the file's first line is a CSV header naming a ``prompt`` column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader([fh.readline()]), [])
    except UnicodeDecodeError:
        return False  # the reader then reports the file as not UTF-8
    return "prompt" in [c.strip() for c in first]


def _reader_for(path: Path, fmt: str):
    if fmt not in PROMPT_FORMATS:
        raise DataError(f"unknown prompt format {fmt!r}; available: {sorted(PROMPT_FORMATS)}")
    if fmt == "ring-a-bell":
        return _rows_csv if _has_prompt_header(path) else _rows_txt
    if fmt == "lines":
        return _rows_txt
    if fmt in _PROMPT_COLUMN:
        return _rows_csv_column(_PROMPT_COLUMN[fmt])
    if fmt != "auto":
        return _rows_csv
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported prompt file type {path.suffix!r}; use .txt, .csv or .jsonl "
                        "(or set the prompt format)")
    return reader


def _finish(records: list[PromptRecord], source: str) -> list[PromptRecord]:
    if not records:
        raise DataError(f"{source} holds no prompts")
    seen: set[str] = set()
    for r in records:
        if not _ID_RE.match(r.id):
            raise DataError(f"{source}: prompt id {r.id!r} is not usable as a file name "
                            "(letters, digits, '_', '-', '.'; at most 128 characters)")
        if r.id in seen:
            raise DataError(f"{source}: prompt id {r.id!r} appears twice; ids must be unique")
        seen.add(r.id)
    return records


def read_prompt_file(path: str | Path, limit: Optional[int] = None, fmt: str = "auto") -> list[PromptRecord]:
    """Read ``path`` into prompt records (the first ``limit`` if given); ``fmt`` is one of PROMPT_FORMATS."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    reader = _reader_for(path, fmt)
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise DataError(f"{path} is larger than {MAX_PROMPT_FILE_BYTES >> 20} MiB; split it into several files")
    records = []
    try:
        for where, row in reader(path):
            if limit is not None and len(records) >= limit:
                break
            records.append(_record(len(records), row, where))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    return _finish(records, str(path))


def records_from_rows(rows: Iterable[dict[str, Any]], source: str) -> list[PromptRecord]:
    """Rows as a CSV / JSONL prompt file holds them, checked as ``read_prompt_file`` checks a file's rows."""
    records = [_record(i, row, f"{source}: row {i + 1}") for i, row in enumerate(rows)]
    return _finish(records, source)


def inline_prompts(prompts: list[str], limit: Optional[int] = None) -> list[PromptRecord]:
    """Prompts given on the command line or in the config, with positional ids."""
    records = [PromptRecord(id=_auto_id(i), prompt=p.strip()) for i, p in enumerate(prompts) if p and p.strip()]
    return _finish(records[:limit] if limit else records, "the prompts given")
