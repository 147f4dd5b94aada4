"""The public Python API drives the whole toy-world pipeline, with the CLI's validation and named results."""

from __future__ import annotations

import pytest

import prunefit
from prunefit.errors import ConfigError


def test_the_toy_pipeline_through_the_python_api(tmp_path):
    pruned = prunefit.prune(output_dir=tmp_path / "p", method="magnitude", target=0.8, eval_prompts=0)
    expert = pruned.experts[0]
    assert pruned.mac_ratios[0] == pytest.approx(0.8, abs=0.03)
    tuned = prunefit.finetune(expert, output_dir=tmp_path / "ft", train={"max_steps": 2, "micro_batch_size": 2},
                              **{"train.checkpoint_every": 100})
    assert tuned.steps == 2 and (tuned.model_path / "expert.json").is_file()
    erased = prunefit.erase(tuned.model_path, method="uce", concepts=["Claude Dots"], output_dir=tmp_path / "uce")
    assert erased.info["method"] == "uce" and (erased.model_path / "expert.json").is_file()
    both = prunefit.bilevel(expert, concepts=["skull"], output_dir=tmp_path / "bl", preset="paper", upper_every=2,
                            esd={"ddim_steps": 3}, train={"max_steps": 2, "micro_batch_size": 2,
                                                          "checkpoint_every": 100})
    assert both.steps == 2 and both.balance["preset"] == "paper"
    run = prunefit.generate(erased.model_path, prompts=["a red star on a black background", "a skull"],
                            output_dir=tmp_path / "g", sampler={"steps": 2})
    assert run.generated == 2
    scores = prunefit.evaluate(run.output_dir, metrics=["toyworld"])
    assert scores.results_path.is_file() and "toyworld" in scores.document["metrics"]
    comps = prunefit.load(erased.model_path)
    assert sum(p.numel() for p in comps.unet.parameters()) < sum(p.numel() for p in prunefit.load().unet.parameters())


def test_api_settings_are_validated_like_the_cli(tmp_path):
    with pytest.raises(ConfigError, match="scheduler"):
        prunefit.generate(output_dir=tmp_path / "x", prompts=["a star"], sampler={"scheduler": "nope"})
    with pytest.raises(ConfigError, match="expert folder"):
        prunefit.bilevel("toyworld", concepts=["skull"], output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
