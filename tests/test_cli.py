"""The command line: help on every subcommand, a full generate run, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prunefit.cli import main


def _run(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "prunefit", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["toyworld", "--help"],
                                  ["toyworld", "build", "--help"], ["toyworld", "show", "--help"]])
def test_help(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    assert "usage: prunefit" in capsys.readouterr().out


def test_python_dash_m_generate_writes_outputs(tmp_path):
    out = tmp_path / "run"
    res = _run(["generate", "-p", "a red circle", "-p", "a blue square", "-o", str(out), "model=tiny",
                "sampler.steps=2"])
    assert res.returncode == 0, res.stderr
    assert "manifest:" in res.stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png"]
    assert (out / "resolved_config.yaml").is_file() and (out / "grid.png").is_file()


def test_print_config(capsys):
    assert main(["generate", "--print-config", "sampler.steps=3"]) == 0
    assert "steps: 3" in capsys.readouterr().out


def _error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("args, message", [
    (["generate", "--prompt-file", "/nonexistent/prompts.txt", "model=tiny"], "prompt file not found"),
    (["generate", "-p", "x", "model=tiny", "sampler.scheduler=warp"], "unknown scheduler 'warp'"),
    (["generate", "-p", "x", "model=tiny", "sampler.steps=0"], "sampler.steps must be >= 1"),
    (["generate", "-p", "x", "model=tiny", "sampler.steps=-5"], "sampler.steps must be >= 1"),
    (["generate", "-p", "x", "model=tiny", "sampler.stepz=5"], "unknown config key 'sampler.stepz'"),
    (["generate", "-p", "x", "model=tiny", "-o", "/dev/null/out"], "cannot write to output folder"),
    (["generate", "model=tiny"], "no prompts"),
    (["generate", "-p", "x", "model=/nonexistent/folder"], "model folder not found"),
    (["generate", "-p", "x", "model=someone/some-model"], "HF_HUB_OFFLINE is set"),
    (["generate", "--config", "/nonexistent.yaml"], "config file not found"),
])
def test_bad_input_one_line_exit_2(args, message, capsys, tmp_path):
    if "-o" not in args:
        args = [*args, "-o", str(tmp_path / "out")]
    code, err = _error(args, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("prunefit: error:") and message in err


def test_not_a_pipeline_folder(capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    code, err = _error(["generate", "-p", "x", f"model={folder}", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a diffusers pipeline folder" in err


def test_error_overwrites_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["generate", "-p", "x", "-o", str(out), "model=tiny", "sampler.steps=2"]) == 0
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = _error(["generate", "-p", "x", "-o", str(out), "model=tiny", "sampler.steps=3"], capsys)
    assert code == 2 and "use a new output_dir" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
