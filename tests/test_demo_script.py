"""The demo script's pieces that need no training: its cut of the decisive test and the verdict it quotes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _demo():
    spec = importlib.util.spec_from_file_location("prunefit_demo_script", ROOT / "scripts" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_demo_runs_the_decisive_tests_settings_on_three_points():
    from prunefit.config.load import load_config
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import grid

    demo = _demo()
    decisive = load_config(ParetoConfig, [str(demo.DECISIVE)], [])
    cfg = load_config(ParetoConfig, [str(demo.DECISIVE)], demo.pareto_overrides())
    assert [p.name for p in grid(cfg)] == ["two-stage-esd0", "two-stage-esd400", "official-full-r0.5"]
    assert cfg.registered is None and cfg.seeds == [0] and cfg.table3.eval_prompts == 50
    assert cfg.table3.expert == decisive.table3.expert  # the registered start, not the demo's APTP experts
    for key in ("lower_steps", "upper_every", "lower_concept_share", "train", "loss", "esd_lr", "data"):
        assert getattr(cfg.table3, key) == getattr(decisive.table3, key), key


def test_the_verdict_is_quoted_from_the_committed_report_or_said_missing(tmp_path):
    demo = _demo()
    missing = demo.committed_verdict(tmp_path / "nope.md")
    assert len(missing) == 1 and "no committed verdict yet" in missing[0]
    report = tmp_path / "docs" / "decisive.md"
    report.parent.mkdir()
    report.write_text("# t\n\n**Verdict:** NO (equivalence),\nwithin 0.15\n\ntext\n\n"
                      "**Setup:** 10 seeds x 200 prompts\n")
    demo.ROOT = tmp_path
    assert demo.committed_verdict(report)[1:] == ["**Verdict:** NO (equivalence), within 0.15",
                                                  "**Setup:** 10 seeds x 200 prompts"]
    report.write_text("# no verdict here\n")
    assert "no '**Verdict**' line" in demo.committed_verdict(report)[0]
