"""Prompt files: txt / csv / jsonl parsing, ids, fixed seeds, and clear errors on malformed input."""

from __future__ import annotations

import pytest

from prunefit.data.prompts import inline_prompts, read_prompt_file
from prunefit.errors import DataError


def test_txt_skips_blank_lines(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n  a dog  \n")
    recs = read_prompt_file(f)
    assert [(r.id, r.prompt) for r in recs] == [("00000", "a cat"), ("00001", "a dog")]


def test_csv_with_id_seed_and_extra_columns(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("case_number,prompt,evaluation_seed,artist\n7,a painting,42,Monet\n9,a house,,Monet\n")
    recs = read_prompt_file(f)
    assert recs[0].id == "7" and recs[0].seed == 42 and recs[0].extra == {"artist": "Monet"}
    assert recs[1].seed is None


def test_jsonl_and_limit(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "x", "id": "a"}\n{"prompt": "y"}\n{"prompt": "z"}\n')
    recs = read_prompt_file(f, limit=2)
    assert [r.id for r in recs] == ["a", "00001"]


@pytest.mark.parametrize("name, text, message", [
    ("p.csv", "text\nhello\n", "needs a 'prompt' column"),
    ("p.jsonl", '{"prompt": "x"}\nnot json\n', "line 2 is not valid JSON"),
    ("p.jsonl", '["x"]\n', "must be a JSON object"),
    ("p.txt", "\n\n", "holds no prompts"),
    ("p.csv", "id,prompt\na,x\na,y\n", "appears twice"),
    ("p.csv", "id,prompt\n../evil,x\n", "not usable as a file name"),
    ("p.csv", "prompt,seed\nx,abc\n", "is not an integer"),
    ("p.xlsx", "x", "unsupported prompt file type"),
])
def test_malformed_files(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(DataError, match=message):
        read_prompt_file(f)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="prompt file not found"):
        read_prompt_file(tmp_path / "nope.txt")


def test_inline():
    assert [r.prompt for r in inline_prompts(["a", " ", "b"])] == ["a", "b"]
    with pytest.raises(DataError, match="holds no prompts"):
        inline_prompts([])
