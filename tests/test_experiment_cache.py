"""Experiments reuse a finished stage only when its resolved settings match: a changed setting trains a new
stage beside the old one (never over it), and ``experiment pareto`` resumes and extends a grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefit.config.load import load_config
from prunefit.errors import ConfigError
from prunefit.experiments.common.stages import stage_dir
from prunefit.experiments.table3.config import ExperimentConfig
from prunefit.experiments.table3.run import Table3


def _t3(tmp_path, *ov):
    return Table3(load_config(ExperimentConfig, [], [f"output_dir={tmp_path}", *ov]))


@pytest.mark.parametrize("override", ["lam=10", "r=0.5", "bilevel_preset=paper", "double_loop=nested",
                                      "upper_train_method=full", "upper_batch_size=4", "lower_concept_share=0",
                                      "bilevel_xt_source=model", "train.lr=2e-4", "seed=1", "lower_steps=200"])
def test_a_changed_bilevel_setting_gets_a_new_stage(tmp_path, override):
    base, changed = _t3(tmp_path), _t3(tmp_path, override)
    assert base.row_spec("ours_esd", "skull") != changed.row_spec("ours_esd", "skull")
    assert stage_dir(tmp_path, "ours_esd", base.row_spec("ours_esd", "skull")) != \
        stage_dir(tmp_path, "ours_esd", changed.row_spec("ours_esd", "skull"))


def test_settings_a_row_does_not_use_keep_its_stage(tmp_path):
    base = _t3(tmp_path)
    assert base.distil_spec("skull") == _t3(tmp_path, "lam=10", "esd_iterations=7").distil_spec("skull")
    assert base.row_spec("distilled+esd", "skull") == _t3(tmp_path, "lam=10").row_spec("distilled+esd", "skull")


def test_a_cached_row_is_reused_only_for_the_same_settings(tmp_path):
    t3 = _t3(tmp_path, "eval_prompts=10")
    croot = tmp_path / "skull"
    rdir = stage_dir(croot, "distilled+esd", t3.row_spec("distilled+esd", "skull"))
    (rdir / "row.json").write_text(json.dumps({"eval": t3.eval_spec(), "asr_adversarial": 0.123}))
    assert t3.row_result("distilled+esd", "skull", croot, Path("-"))["asr_adversarial"] == 0.123
    other = _t3(tmp_path, "eval_prompts=10", "esd_iterations=7")
    odir = stage_dir(croot, "distilled+esd", other.row_spec("distilled+esd", "skull"))
    assert odir != rdir and not (odir / "row.json").exists()
    assert json.loads((rdir / "row.json").read_text())["asr_adversarial"] == 0.123  # the old row is untouched


def test_the_bilevel_row_config_carries_every_knob(tmp_path):
    t3 = _t3(tmp_path, "bilevel_preset=paper", "double_loop=nested", "lam=7", "r=0.5", "upper_train_method=full",
             "upper_batch_size=3", "lower_concept_share=0")
    b = t3.bilevel_config("esd", "skull", Path("s"), Path("o"))
    assert (b.preset, b.double_loop, b.lam, b.upper_train_method, b.upper_batch_size) == ("paper", "nested", 7.0,
                                                                                         "full", 3)
    assert b.upper_lr == pytest.approx(0.5 * 4 * 1e-4) and b.data.toy_p_unsafe == 0.0
    assert b.balance()["r"] == pytest.approx(0.5)
    art = t3.bilevel_config("esd", "Claude Dots", Path("s"), Path("o"))
    assert art.data.toy_exclude_artists == ["Claude Dots"]


@pytest.mark.experiment
@pytest.mark.slow
def test_pareto_resumes_and_extends_a_grid_without_recomputing(tmp_path, monkeypatch):
    from prunefit.experiments.pareto import run as pareto

    common = [f"output_dir={tmp_path / 'p'}", "lower_steps=2", "eval_prompts=2", "seeds=[0]", "official_r_grid=[]",
              "paper_lam_grid=[]", "paper_r_grid=[]", "purity_points=[]", "esd_ddim_steps=3",
              "train.micro_batch_size=2", "train.checkpoint_every=100", "n_boot=20"]
    logs: list[str] = []
    pareto.main(load_config(pareto.ParetoConfig, [], [*common, "esd_grid=[0]"]), log=logs.append)
    assert [m for m in logs if m.startswith("[pareto]")] == ["[pareto] skull: two-stage-esd0, seed 0"]
    logs.clear()
    writes: list[int] = []  # a reused cell must not rewrite the report (each write bootstraps every point)
    write = pareto.Pareto.write
    monkeypatch.setattr(pareto.Pareto, "write", lambda self, c, r, cells: writes.append(len(cells)) or
                        write(self, c, r, cells))
    summary = pareto.main(load_config(pareto.ParetoConfig, [], [*common, "esd_grid=[0, 1]", "esd_iterations=1"]),
                          log=logs.append)["skull"]
    assert [m for m in logs if m.startswith("[pareto]")] == ["[pareto] skull: two-stage-esd1, seed 0"]
    assert writes == [2, 2]  # once after the one new cell, once at the end
    logs.clear()
    summary = pareto.main(load_config(pareto.ParetoConfig, [], [*common, "esd_grid=[0, 1]", "esd_iterations=1",
                                                                "attacks=[none]", "attack_prompts=2"]),
                          log=logs.append)["skull"]  # attacks added to the finished cells, nothing retrained
    assert not [m for m in logs if m.startswith("[pareto]")]
    assert len([m for m in logs if m.startswith("[attack] skull: none on ")]) == 2  # one per cell
    assert all(p["attacks"]["none"][1] == 1 for p in summary["points"])
    assert "ASR none post" in (tmp_path / "p" / "skull" / "report.md").read_text()
    assert [p["point"] for p in summary["points"]] == ["two-stage-esd0", "two-stage-esd1"]
    assert summary["verdict"].startswith("verdict: not enough points")
    assert (tmp_path / "p" / "skull" / "pareto.png").is_file()


def test_pareto_runs_the_core_points_first_in_their_listed_order():
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import grid, run_order

    cfg = ParetoConfig(seeds=[0, 1], esd_grid=[0, 100], official_r_grid=[0.25], paper_lam_grid=[1.0],
                       paper_r_grid=[0.25], purity_points=["official:0.25"],
                       core_points=["interleaved:1", "two-stage:0", "official:0.25"])
    order = [(p.name, s) for p, s in run_order(cfg, grid(cfg))]
    assert order[:6] == [("interleaved-lam1", 0), ("interleaved-lam1", 1), ("two-stage-esd0", 0),
                         ("two-stage-esd0", 1), ("official-r0.25", 0), ("official-r0.25", 1)]
    assert len(order) == len(grid(cfg)) * 2 and len(set(order)) == len(order)  # every cell once
    assert order[6:] == [(n, 0) for n in ("two-stage-esd100", "nested-r0.25", "official-r0.25-pure")] + \
        [(n, 1) for n in ("two-stage-esd100", "nested-r0.25", "official-r0.25-pure")]


def test_the_verdict_judges_the_finished_points_on_every_seed_and_names_the_rest():
    from prunefit.experiments.pareto.run import Point, verdict_cells

    def cells(*seeds):
        return [{"seed": s} for s in seeds]

    esd, off, nested = Point("two-stage", 100), Point("official", 0.5), Point("nested", 0.25)
    judged, common, pending = verdict_cells({esd: cells(0, 1, 2), off: cells(0, 1, 2), nested: cells(0)}, [0, 1, 2])
    assert set(judged) == {esd, off} and common == [0, 1, 2] and pending == ["nested-r0.25 (1 of 3 seeds)"]
    # no bilevel point finished on every seed yet: every point on the seeds they share
    judged, common, pending = verdict_cells({esd: cells(0, 1, 2), nested: cells(0, 1)}, [0, 1, 2])
    assert set(judged) == {esd, nested} and common == [0, 1] and pending == []
    assert verdict_cells({esd: cells(1), nested: cells(0)}, [0, 1, 2]) == ({}, [], [])
    # a finished pure-data two-stage point is not a bilevel point: the fallback applies
    pure = Point("two-stage", 100, pure=True)
    judged, common, pending = verdict_cells({esd: cells(0, 1, 2), pure: cells(0, 1, 2), nested: cells(0)}, [0, 1, 2])
    assert set(judged) == {esd, pure, nested} and common == [0] and pending == []


def test_table3_attacks_a_finished_row_once_without_retraining_it(tmp_path, monkeypatch):
    from prunefit.experiments.common import attacks as attack

    t3 = _t3(tmp_path, "eval_prompts=10", "attacks=[none]", "attack_prompts=2")
    croot = tmp_path / "skull"
    rdir = stage_dir(croot, "distilled+esd", t3.row_spec("distilled+esd", "skull"))
    (rdir / "row.json").write_text(json.dumps({"eval": t3.eval_spec(), "model": "toyworld", "asr_adversarial": 0.5}))
    row = t3.row_result("distilled+esd", "skull", croot, Path("-"))  # the real fixed-set attack on the teacher
    entry = row["attacks"]["none"]
    assert (entry["n"], entry["pre_asr"], entry["asr"]) == (2, 1.0, 1.0)  # the unerased teacher shows skulls
    assert json.loads((rdir / "row.json").read_text())["attacks"]["none"]["asr"] == 1.0
    monkeypatch.setattr(attack, "attack_asr", lambda *a, **k: pytest.fail("a finished attack was rerun"))
    assert t3.row_result("distilled+esd", "skull", croot, Path("-"))["attacks"] == row["attacks"]
    with pytest.raises(ConfigError, match="no_such"):
        _t3(tmp_path, "attacks=[no_such]")
