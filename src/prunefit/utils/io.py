"""Atomic file and folder writes (done markers included) and the one JSONL reader with its one torn-line policy.

Writes: a file is written to a hidden sibling ``.<name>.<pid>.tmp`` (concurrent ranks never share one), flushed
to disk and renamed over ``<name>``; a folder is built as ``.<name>.tmp`` and renamed when complete. A reader sees
the old content or the new, never half of it, and a writer that raises leaves no partial file behind (a killed one
leaves only its hidden temporary).

Reading JSONL: a run killed mid-append leaves a last line without its newline. Such a line that is not JSON is a
torn write: it is dropped, with one line on stderr. Any other line that is not JSON is corruption and raises
``DataError`` naming the file and the line. ``append_jsonl`` drops a torn tail before it appends, so a resumed
run never glues its first row to a dead run's fragment.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Union

from prunefit.errors import DataError, OutputError

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (with any writer: ``save_file``, ``img.save``);
    on success it is fsynced and renamed over ``path``, on an exception removed (``path`` is left as it was)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename); returns ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary sibling, fsync, rename); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, **json_kwargs: Any) -> Path:
    """Write ``json.dumps(obj, **json_kwargs)`` to ``path`` atomically; returns ``path``. The object is serialized
    before anything touches the disk, so an unserializable one leaves ``path`` as it was."""
    return atomic_write_text(path, json.dumps(obj, **json_kwargs))


def mark_done(path: PathLike, obj: Any, **json_kwargs: Any) -> Path:
    """Write a done marker: a JSON file whose presence says a run or stage finished and gates its reuse. It is
    written atomically (``atomic_write_json``), so it exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, obj, **json_kwargs)


@contextmanager
def atomic_folder(final: PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder ``.<name>.tmp`` beside ``final`` to build it in; on success it is renamed to
    ``final``, on an exception removed (``final`` is left as it was).

    An existing ``final`` is refused with ``OutputError`` (before anything is written), or with ``replace=True``
    swapped out: it is moved to ``.<name>.old`` and deleted after the rename. Folders are written by one process
    (rank 0); a temporary left by a killed writer is cleared by the next one."""
    final = Path(final)
    if final.exists() and not replace:
        raise OutputError(f"{final} already exists; choose a new folder (nothing was overwritten)")
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


class JsonlLineError(DataError):
    """A JSONL line that is not JSON: ``path``, ``line`` (1-based) and ``torn`` (the unterminated last line)."""

    def __init__(self, message: str, path: Path, line: int, torn: bool) -> None:
        super().__init__(message)
        self.path, self.line, self.torn = path, line, torn


def jsonl_lines(path: PathLike, *, torn: str = "skip_last", missing_ok: bool = False) -> list[tuple[int, Any]]:
    """``(line number, row)`` for every non-blank line of the JSONL file ``path``; the policy of ``read_jsonl``.

    ``torn="skip_last"`` drops a torn last line (unterminated and not JSON) with one line on stderr;
    ``torn="raise"`` raises ``JsonlLineError`` for it (a reader that refuses an unfinished run). A missing file is
    a ``DataError``, or ``[]`` with ``missing_ok``."""
    if torn not in ("skip_last", "raise"):
        raise ValueError(f"torn must be 'skip_last' or 'raise', got {torn!r}")
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return []
        raise DataError(f"{path} not found")
    text = path.read_text(encoding="utf-8-sig")
    lines = text.split("\n")  # not splitlines(): U+2028 and friends may stand unescaped inside a JSON string
    if lines[-1] == "":
        lines.pop()  # the newline that ends the file
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            if n == len(lines) and not text.endswith("\n"):
                if torn == "skip_last":
                    print(f"warning: {path}: line {n} is a torn write (a run killed mid-append); ignoring it",
                          file=sys.stderr)
                    continue
                raise JsonlLineError(f"{path}: line {n} is not valid JSON (a torn last line: the writer was "
                                     "interrupted)", path, n, True) from None
            raise JsonlLineError(f"{path}: line {n} is not valid JSON ({exc.msg}); the file is corrupt",
                                 path, n, False) from None
    return out


def read_jsonl(path: PathLike, *, torn: str = "skip_last", missing_ok: bool = False) -> list[Any]:
    """The rows of the JSONL file ``path``, blank lines skipped: the one JSONL reader.

    One torn-line policy: a last line without a trailing newline that is not JSON is a torn write (a run killed
    mid-append) and is dropped with a one-line warning on stderr (``torn="raise"``: ``JsonlLineError``); a line that
    is not JSON anywhere else raises ``JsonlLineError`` (a ``DataError``) naming the file and line. A missing file
    is a ``DataError``, or ``[]`` with ``missing_ok``."""
    return [row for _, row in jsonl_lines(path, torn=torn, missing_ok=missing_ok)]


def drop_torn_tail(path: PathLike) -> None:
    """Cut an unterminated last line that is not JSON off the file ``path`` (a run killed mid-append), or end a
    whole one with its newline, so that the next append starts a line of its own."""
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    try:
        json.loads(data[keep:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        print(f"warning: {path}: dropping a torn last line (a run killed mid-append) before appending",
              file=sys.stderr)
        with open(path, "rb+") as fh:
            fh.truncate(keep)
        return
    with open(path, "ab") as fh:  # a whole last row that only lacks its newline: keep it
        fh.write(b"\n")


def append_jsonl(target: Union[PathLike, IO[str]], rows: Iterable[Any]) -> None:
    """Append ``rows`` to a JSONL file, one line each, and fsync: ``target`` is a path (a torn tail left by a
    killed writer is dropped first) or a text handle opened for appending (see ``open_jsonl_append``)."""
    if isinstance(target, (str, os.PathLike)):
        with open_jsonl_append(target) as fh:
            append_jsonl(fh, rows)
        return
    target.write("".join(json.dumps(r) + "\n" for r in rows))
    target.flush()
    os.fsync(target.fileno())


def open_jsonl_append(path: PathLike) -> IO[str]:
    """``path`` opened for appending JSONL rows (utf-8), after dropping a torn tail left by a killed writer."""
    drop_torn_tail(path)
    return open(path, "a", encoding="utf-8")
