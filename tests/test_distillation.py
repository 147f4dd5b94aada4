"""The distillation ablation (``prunefit experiment distillation``): curves per variant and seed from chunked
fine-tuning, judged points kept and reused, a report with intervals."""

from __future__ import annotations

import dataclasses
import json

import pytest

from prunefit.config.schema import PruneConfig, TrainConfig
from prunefit.errors import ConfigError


@pytest.fixture(scope="module")
def toy_expert(tmp_path_factory):
    from prunefit.recipes import prune

    out = tmp_path_factory.mktemp("mag")
    prune.main(dataclasses.replace(PruneConfig(), model="toyworld", method="magnitude", target=0.8,
                                   output_dir=str(out), eval_prompts=0))
    return out / "experts" / "expert-0"


@pytest.mark.experiment
@pytest.mark.slow
def test_ablation_curves_resume_and_report(toy_expert, tmp_path):
    from prunefit.experiments.distillation.config import DistillationConfig
    from prunefit.experiments.distillation.run import main

    cfg = DistillationConfig(expert=str(toy_expert), output_dir=str(tmp_path / "abl"), seeds=[0],
                             variants=["ddpm", "all"], steps=2, eval_every=1, eval_prompts=4, n_boot=20,
                             train=TrainConfig(lr=1e-4, warmup_steps=0, micro_batch_size=2, log_every=1))
    logs: list[str] = []
    summary = main(cfg, log=logs.append)
    rows = summary["rows"]
    assert [(r["variant"], r["step"], r["seeds"]) for r in rows] == [("ddpm", 1, 1), ("ddpm", 2, 1), ("all", 1, 1),
                                                                     ("all", 2, 1)]
    assert all(r["fjd"]["low"] <= r["fjd"]["estimate"] <= r["fjd"]["high"] for r in rows)
    assert sum("[distillation]" in m for m in logs) == 4  # two chunks of one step per variant
    root = tmp_path / "abl"
    assert (root / "curves.png").is_file() and "| ddpm | 1 / 0 / 0 | 2 |" in (root / "report.md").read_text()
    point = json.loads((root / "all" / "seed-0" / "eval-2-4.json").read_text())
    assert point["step"] == 2 and len(point["correct"]) == 4
    again: list[str] = []
    assert main(cfg, log=again.append)["rows"] == rows and not any("[distillation]" in m for m in again)


def test_unknown_variants_and_empty_seeds_are_refused():
    from prunefit.experiments.distillation.config import DistillationConfig

    with pytest.raises(ConfigError, match="unknown distillation variants"):
        DistillationConfig(variants=["ddpm", "kd_everything"])
    with pytest.raises(ConfigError, match="seeds non-empty"):
        DistillationConfig(seeds=[])
