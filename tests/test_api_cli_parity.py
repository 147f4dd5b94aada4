"""The Python API and the CLI resolve the same settings for every command: both go through ``load_config``, which
applies a model's carried method defaults itself (the API used to skip them: ``prunefit.erase(..., method="esd")``
ran ESD at lr 1e-5 x 1,000 on the toy world while ``prunefit erase`` ran 1e-4 x 200)."""

from __future__ import annotations

import contextlib
import io

import pytest

import prunefit
from prunefit.cli import main as cli_main
from prunefit.config.load import to_yaml

CASES = {
    # command: (api call with its recipe captured, the CLI's argv for the same settings)
    "generate": (lambda: prunefit.generate("toyworld", output_dir="runs/x", prompts=["a red circle"],
                                           sampler={"steps": 5}),
                 ["generate", "-p", "a red circle", "-o", "runs/x", "sampler.steps=5"]),
    "prune": (lambda: prunefit.prune("toyworld", output_dir="runs/x", steps=7, num_experts=2),
              ["prune", "output_dir=runs/x", "steps=7", "num_experts=2"]),
    "finetune": (lambda: prunefit.finetune(output_dir="runs/x", train={"max_steps": 3, "lr": 1e-4}),
                 ["finetune", "output_dir=runs/x", "train.max_steps=3", "train.lr=1e-4"]),
    "erase esd": (lambda: prunefit.erase("toyworld", method="esd", concepts=["Claude Dots"], output_dir="runs/x"),
                  ["erase", "--method", "esd", "removal.concepts=[Claude Dots]", "output_dir=runs/x"]),
    "erase uce": (lambda: prunefit.erase("toyworld", method="uce", concepts=["skull"], output_dir="runs/x"),
                  ["erase", "--method", "uce", "removal.concepts=[skull]", "output_dir=runs/x"]),
    "bilevel": (lambda: prunefit.bilevel("expert", concepts=["skull"], output_dir="runs/x", preset="paper"),
                ["bilevel", "student=expert", "concepts=[skull]", "output_dir=runs/x", "preset=paper"]),
    "evaluate": (lambda: prunefit.evaluate("runs/g", metrics=["toyworld"]),
                 ["evaluate", "runs/g", "-m", "toyworld"]),
}
RECIPES = {"generate": "generate", "prune": "prune", "finetune": "finetune", "erase esd": "erase",
           "erase uce": "erase", "bilevel": "bilevel", "evaluate": "evaluate"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_api_and_cli_resolve_the_same_config(name, monkeypatch, tmp_path):
    import importlib
    import json

    expert = tmp_path / "expert"  # the API reads an expert folder's base model from its expert.json
    expert.mkdir()
    (expert / "expert.json").write_text(json.dumps({"source_model": "toyworld"}))
    recipe = importlib.import_module(f"prunefit.recipes.{RECIPES[name]}")
    seen = []
    monkeypatch.setattr(recipe, "main", lambda cfg: seen.append(cfg))
    monkeypatch.setattr("prunefit.pruning.expert.read_expert_info",
                        lambda path: type("Info", (), {"source_model": "toyworld"})())
    call, argv = CASES[name]
    monkeypatch.chdir(tmp_path)
    call()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*argv, "--print-config"]) == 0
    assert to_yaml(seen[0]) == out.getvalue()


def test_the_api_gets_the_toy_worlds_esd_settings(monkeypatch):
    """The case the issue names: the API's ESD on the toy world runs the model's lr 1e-4 x 200, as the CLI does."""
    from prunefit.recipes import erase as recipe

    seen = []
    monkeypatch.setattr(recipe, "main", lambda cfg: seen.append(cfg))
    prunefit.erase("toyworld", method="esd", concepts=["Claude Dots"], output_dir="runs/x")
    assert (seen[0].esd.lr, seen[0].esd.iterations) == (1e-4, 200)
