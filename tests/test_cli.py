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


def test_cache_is_a_config_command_and_prints_its_result(tmp_path, capsys):
    from prunefit.data.cache import load_cache

    out = tmp_path / "cache"
    assert main(["cache", "model=tiny", "samples=4", "batch_size=2", f"output_dir={out}"]) == 0
    assert capsys.readouterr().out.strip() == f"cached 4 samples -> {out}"
    assert load_cache(out) is not None
    assert main(["cache", "samples=0"]) == 2
    assert "samples and batch_size must be >= 1" in capsys.readouterr().err


def test_every_config_command_names_a_schema_and_a_recipe_that_exist():
    from prunefit.cli import _COMMANDS, _EXPERIMENTS, _named, command_schema

    rows = [(n, r) for n, r in _COMMANDS.items() if not r.sub] + [
        (n, r) for c in _COMMANDS.values() if c.sub for n, r in c.sub.items()]
    for name, spec in rows:
        assert callable(_named(spec.recipe or f"prunefit.recipes.{name}:main")), name
        assert not spec.schema or name not in _COMMANDS or command_schema(name) is _named(spec.schema), name
    for name in [*_EXPERIMENTS, "experiment", "evaluate"]:
        assert command_schema(name).__name__.endswith("Config"), name
