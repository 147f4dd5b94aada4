"""utils/io: atomic writes leave the old content or the new, never part of one; the one JSONL torn-line policy."""

from __future__ import annotations

import json

import pytest

from prunefit.errors import DataError, OutputError
from prunefit.utils.io import (
    JsonlLineError,
    append_jsonl,
    atomic_file,
    atomic_folder,
    atomic_write_json,
    atomic_write_text,
    jsonl_lines,
    mark_done,
    read_jsonl,
)


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1}, indent=1)
    atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert atomic_write_text(tmp_path / "t.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert _hidden(tmp_path) == []


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_file(path) as tmp:
            assert tmp.parent == path.parent and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
            tmp.write_bytes(b"half of the ne")  # part of the new content is on disk...
            raise RuntimeError("disk on fire")  # ...when the writer dies
    assert path.read_bytes() == b"old"
    assert _hidden(tmp_path) == []
    with pytest.raises(TypeError):  # not serializable: nothing is written at all
        atomic_write_json(tmp_path / "new.json", {"x": object()})
    assert not (tmp_path / "new.json").exists() and _hidden(tmp_path) == []


def test_mark_done_is_atomic_json_and_creates_its_folder(tmp_path):
    marker = mark_done(tmp_path / "stage" / "DONE.json", {"steps": 3}, indent=2)
    assert json.loads(marker.read_text()) == {"steps": 3} and _hidden(tmp_path / "stage") == []


def test_atomic_folder_renames_on_success_and_removes_its_temporary_on_failure(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_folder(final) as tmp:
        assert tmp.name == ".ckpt.tmp" and tmp.is_dir()
        (tmp / "w.bin").write_bytes(b"1")
    assert (final / "w.bin").read_bytes() == b"1" and _hidden(tmp_path) == []
    with pytest.raises(OutputError, match="already exists"):  # refused by default, before anything is written
        with atomic_folder(final):
            pass
    with pytest.raises(ValueError):
        with atomic_folder(final, replace=True) as tmp:
            (tmp / "w.bin").write_bytes(b"half")
            raise ValueError("killed")
    assert (final / "w.bin").read_bytes() == b"1" and _hidden(tmp_path) == []  # the old folder, untouched
    with atomic_folder(final, replace=True) as tmp:
        (tmp / "v.bin").write_bytes(b"2")
    assert sorted(p.name for p in final.iterdir()) == ["v.bin"] and _hidden(tmp_path) == []


def test_a_torn_last_line_is_dropped_with_one_warning(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3, "pro')
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: line 4 is a torn write" in err[0]
    assert jsonl_lines(path) == [(1, {"id": 1}), (3, {"id": 2})]  # line numbers count blank lines
    with pytest.raises(JsonlLineError, match=r"line 4 is not valid JSON \(a torn last line") as info:
        read_jsonl(path, torn="raise")
    assert info.value.torn and info.value.line == 4
    path.write_text('{"id": 1}\n{"id": 2}')  # a whole last row without its newline is kept
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]


def test_a_bad_line_anywhere_else_raises_data_error_naming_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n{"id": 3}\n')
    with pytest.raises(DataError, match=rf"{path}: line 2 is not valid JSON"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n{"id": 2\n')  # the last line, but terminated: not a torn append, corruption
    with pytest.raises(DataError, match=r"line 2 is not valid JSON .*corrupt") as info:
        read_jsonl(path)
    assert not info.value.torn
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "absent.jsonl")
    assert read_jsonl(tmp_path / "absent.jsonl", missing_ok=True) == []


def test_append_after_a_torn_tail_starts_a_clean_line(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"step": 1}])
    with path.open("a") as fh:
        fh.write('{"step": 2, "lo')  # a run killed mid-append
    append_jsonl(path, [{"step": 2}, {"step": 3}])  # the resumed run
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert "dropping a torn last line" in capsys.readouterr().err
    path.write_text('{"step": 1}')  # whole but unterminated: kept, and the next row starts its own line
    append_jsonl(path, [{"step": 2}])
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
