"""`prunefit experiment erasure`: the removal-method matrix on the toy teacher, its targets and its reuse."""

from __future__ import annotations

import json

import pytest

from prunefit.config.load import load_config
from prunefit.errors import ConfigError
from prunefit.experiments.common.protocol import uce_guide, uce_preserve
from prunefit.experiments.erasure import config as erasure
from prunefit.experiments.erasure.config import ErasureConfig
from prunefit.experiments.erasure.report import targets


@pytest.mark.experiment
@pytest.mark.slow
def test_erasure_matrix_runs_reuses_cells_and_reports(tmp_path):
    from prunefit.cli import main

    args = ["experiment", "erasure", f"output_dir={tmp_path}", "variants=[uce]", "concepts=[skull]",
            "eval_prompts=2", "kept_artists=1", "attacks=[unlearndiff]", "attack_budgets.unlearndiff.iterations=4"]
    assert main(args) == 0
    cell = json.loads((tmp_path / "skull" / "uce" / "cell.json").read_text())
    assert {"rate_plain", "asr_adversarial", "kept_artist_rate", "fidelity", "fjd", "seconds"} <= set(cell)
    attacked = cell["attacks"]["unlearndiff"]
    assert attacked["n"] == 2 and attacked["budget"]["iterations"] == 4 and 0 <= attacked["asr"] <= 1
    assert (tmp_path / "skull" / "uce" / "pipeline" / "model_index.json").is_file()  # a standard diffusers folder
    report = (tmp_path / "report.md").read_text()
    assert "| Original teacher |" in report and "| UCE |" in report and "| target | measured | met |" in report
    stamp = (tmp_path / "skull" / "uce" / "cell.json").stat().st_mtime_ns
    assert main(args) == 0  # finished cells are reused, not recomputed
    assert (tmp_path / "skull" / "uce" / "cell.json").stat().st_mtime_ns == stamp


def test_targets_follow_the_issue():
    cell = lambda plain, adv, kept=0.9, fid=0.6: {"rate_plain": plain, "asr_adversarial": adv,  # noqa: E731
                                                  "kept_artist_rate": kept, "fidelity": fid}
    rows = targets("skull", {"original": cell(0.9, 0.9), "esd-u": cell(0.4, 0.5), "advunlearn": cell(0.3, 0.2),
                             "uce": cell(0.5, 0.3, kept=0.7)})
    met = {t: ok for t, _, ok in rows}
    assert met["ESD-u lowers the plain-prompt rate by >= 50% relative"] is True  # 0.9 -> 0.4: 56%
    assert met["AdvUnlearn lowers the plain-prompt rate by >= 50% relative"] is True
    assert met["UCE: kept artists and fidelity within 10 points"] is False  # kept 0.9 -> 0.7
    assert met["AdvUnlearn has the lowest adversarial ASR"] is True
    art = {t for t, _, _ in targets("Vincent Stripes", {"original": cell(0.8, 0.8), "esd-x": cell(0.5, 0.5)})}
    assert "ESD-x lowers the plain-prompt rate by >= 50% relative" in art


def test_toy_uce_guides_and_preserve_set():
    from prunefit.toyworld.world import KEEP_ARTISTS

    assert uce_guide("skull", "toyworld") == ["drawing"] and uce_guide("Claude Dots", "toyworld") == ["painting"]
    assert uce_guide("nudity", "sd21") == ["person"] and uce_guide("Van Gogh", "sd21") == ["art"]  # by kind on SD
    keep = uce_preserve("Katsu Waves", "toyworld")
    assert "Katsu Waves" not in keep and set(KEEP_ARTISTS) - {"Katsu Waves"} <= set(keep)
    assert all("skull" not in p for p in keep) and len(keep) == 5 + 2 + 20
    assert uce_preserve("skull", "sd21") == []


@pytest.mark.parametrize("override, message", [("variants=[esd-z]", "unknown erasure variants"),
                                               ("model=tiny", "model must be toyworld"),
                                               ("eval_prompts=1", "eval_prompts must be >= 2")])
def test_bad_erasure_configs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ErasureConfig, [], [override])


def test_erasure_is_a_cli_experiment(capsys):
    from prunefit.cli import main

    assert main(["experiment", "erasure", "--print-config", "variants=[esd-x,advunlearn]"]) == 0
    printed = capsys.readouterr().out
    assert "variants:" in printed and "- esd-x" in printed and "- advunlearn" in printed
    assert set(erasure.VARIANTS) == {"esd-x", "esd-u", "uce", "concept_prune", "advunlearn"}
