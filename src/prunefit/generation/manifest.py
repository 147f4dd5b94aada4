"""Read a run's manifest.jsonl, the one reader behind resuming ``generate`` and every metric that reads a run.

One JSON object per line, appended as each image is written. A process killed mid-write leaves a torn last
line (unterminated, not JSON; ``prunefit.utils.io``'s one policy): resuming generation skips it (that image is
simply made again); evaluation refuses the run until the generation is finished. Any other line that is not
JSON, or a row without the required keys, is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from prunefit.errors import DataError
from prunefit.utils.io import JsonlLineError, jsonl_lines

MANIFEST = "manifest.jsonl"


def read_manifest(path: Path, *, torn_tail: str = "skip", require: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Rows by id, in the order ids first appear (the last row of an id wins); {} when ``path`` does not exist.

    ``torn_tail``: "skip" ignores a torn last line (unterminated and not JSON), "refuse" raises ``DataError`` for it.
    ``require``: keys every row must have besides ``id``.
    """
    if torn_tail not in ("skip", "refuse"):
        raise ValueError(f"torn_tail must be 'skip' or 'refuse', got {torn_tail!r}")
    rows: dict[str, dict[str, Any]] = {}
    try:
        lines = jsonl_lines(path, torn="skip_last" if torn_tail == "skip" else "raise", missing_ok=True)
    except JsonlLineError as exc:
        what = ("a torn last line: the generation was interrupted; re-run `prunefit generate` on this folder "
                "to finish it" if exc.torn else "a corrupt manifest; move the folder aside and re-run")
        raise DataError(f"{path}: line {exc.line} is not valid JSON ({what})") from None
    for n, row in lines:
        missing = [k for k in ("id", *require) if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"{path}: line {n} lacks {' or '.join(repr(k) for k in missing)}")
        rows[str(row["id"])] = row
    return rows
