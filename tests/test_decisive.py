"""The decisive test's pieces: the registered paired rule on hand-computable cases, no evaluation vocabulary on any
training path, the App. C preset and the control rows' settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunefit.experiments.pareto.decision import (
    DecisionRule,
    SeedDelta,
    decide,
    front_at,
    front_points,
    holm,
    registered_decisions,
    seed_deltas,
    t_interval,
)

DECISIVE = sorted(Path("configs/toyworld/decisive").glob("*.yaml"))


def test_front_is_the_non_dominated_points_read_linearly_and_clamped_at_its_ends():
    pts = [(0.9, 1.0), (0.5, 1.4), (0.2, 2.0), (0.6, 1.6)]  # (0.6, 1.6) is dominated by (0.5, 1.4)
    assert front_points(pts) == [(0.2, 2.0), (0.5, 1.4), (0.9, 1.0)]
    assert front_at(pts, 0.35).fjd == pytest.approx(1.7)  # halfway between (0.2, 2.0) and (0.5, 1.4)
    assert front_at(pts, 0.35).asr == 0.35
    low, high = front_at(pts, 0.1), front_at(pts, 0.95)
    assert (low.fjd, low.asr) == (2.0, 0.2) and (high.fjd, high.asr) == (1.0, 0.9)


def test_seed_deltas_pair_each_point_with_its_own_seeds_front():
    point = {0: (0.35, 1.5), 1: (0.95, 0.9), 2: (0.5, 1.0)}
    fronts = {0: [(0.2, 2.0), (0.5, 1.4)], 1: [(0.2, 2.0), (0.9, 1.0)]}  # seed 2 has no front yet
    d = seed_deltas(point, fronts)
    assert [x.seed for x in d] == [0, 1]
    assert d[0].delta == pytest.approx(1.5 - 1.7) and d[0].dasr == pytest.approx(0.0)
    assert d[1].delta == pytest.approx(0.9 - 1.0) and d[1].dasr == pytest.approx(5.0)  # clamped: 95 vs 90


def _deltas(xs, dasr=0.0):
    return [SeedDelta(i, 0.5 + dasr / 100, 1.0 + x, 1.0, 0.5) for i, x in enumerate(xs)]


def test_t_interval_by_hand():
    lo, hi = t_interval([-0.2, -0.4], 0.95)  # mean -0.3, se 0.1, t(0.975, 1) = 12.7062
    assert lo == pytest.approx(-0.3 - 1.270620, abs=1e-5) and hi == pytest.approx(-0.3 + 1.270620, abs=1e-5)


def test_the_rule_says_yes_no_and_inconclusive_as_registered():
    rule = DecisionRule(primary="official-full:0.5", seeds=list(range(5)))
    yes = decide(_deltas([-0.30, -0.25, -0.35, -0.30, -0.28]), rule)
    assert yes.verdict == "YES" and yes.mean_delta == pytest.approx(-0.296) and yes.interval[1] < 0
    assert yes.p_t < 0.025 and yes.p_wilcoxon == pytest.approx(1 / 32)  # every sign negative: 1 / 2^5
    assert decide(_deltas([0.01, -0.02, 0.03, 0.0, -0.01]), rule).verdict == "NO"  # inside (-0.15, 0.15)
    assert decide(_deltas([0.4, 0.5, 0.45, 0.42, 0.48]), rule).verdict == "NO"  # above 0
    assert decide(_deltas([-0.5, 0.4, -0.3, 0.2, -0.1]), rule).verdict == "INCONCLUSIVE"
    # a gain bought with more ASR at the matched point is not a YES
    assert decide(_deltas([-0.30, -0.25, -0.35, -0.30, -0.28], dasr=5.0), rule).verdict == "INCONCLUSIVE"
    # an effect below the margin is not a YES even when the interval is below 0: inside the margin it is NO
    # (equivalent), reaching past it it is INCONCLUSIVE
    assert decide(_deltas([-0.10, -0.11, -0.09, -0.10, -0.10]), rule).verdict == "NO"
    assert decide(_deltas([-0.10, -0.20, -0.12, -0.15, -0.13]), rule).verdict == "INCONCLUSIVE"
    assert decide(_deltas([-0.3, -0.3]), rule).verdict == "PENDING"  # seeds 2-4 missing


def test_holm_steps_down():
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]  # 0.01 <= 0.05/3; 0.03 > 0.05/2
    assert holm([0.01, 0.02, 0.04], 0.05) == [True, True, True]
    assert holm([float("nan"), 0.001], 0.05) == [False, True]


def test_registered_decisions_from_cells_with_an_interim_look():
    def cell(seed, asr, fjd):
        return {"seed": seed, "asr": asr, "fjd": fjd}

    fronts = {s: [cell(s, 0.9, 1.0), cell(s, 0.5, 1.4), cell(s, 0.2, 2.0)] for s in range(6)}
    cells = {"two-stage:0": [f[0] for f in fronts.values()], "two-stage:100": [f[1] for f in fronts.values()],
             "two-stage:400": [f[2] for f in fronts.values()],
             # the primary: 0.3 below the front at ASR 0.5 on seeds 0-2, mixed on 3-5
             "official-full:0.5": [cell(s, 0.5, 1.1 if s < 3 else (1.0, 1.9, 1.2)[s - 3]) for s in range(6)],
             "sequential:100": [cell(s, 0.5, 1.2) for s in range(6)]}
    rule = DecisionRule(primary="official-full:0.5", seeds=[0, 1, 2, 3], interim_seeds=[4, 5],
                        secondary=["official-full:0.5@sequential"])
    res = registered_decisions(cells, rule, lambda c: c["fjd"])
    first = res.looks[0]
    assert [round(d.delta, 6) for d in first.deltas] == [-0.3, -0.3, -0.3, -0.4]
    assert first.verdict == "YES"  # tested at alpha / 2 (two looks); no second look after a decision
    assert len(res.looks) == 1 and res.primary.decision is first
    sec = res.secondary[0]
    assert sec.against == "sequential" and [round(d.delta, 6) for d in sec.decision.deltas] == [-0.1, -0.1, -0.1,
                                                                                               -0.2]
    assert sec.holm_reject is not None


def test_an_inconclusive_first_look_adds_the_interim_seeds():
    cells = {"two-stage:0": [{"seed": s, "asr": 0.5, "fjd": 1.0} for s in range(6)],
             "official-full:0.5": [{"seed": s, "asr": 0.5, "fjd": 1.0 + x}
                                   for s, x in enumerate([-0.5, 0.3, -0.4, 0.2, -0.3, -0.2])]}
    rule = DecisionRule(primary="official-full:0.5", seeds=[0, 1, 2, 3], interim_seeds=[4, 5])
    res = registered_decisions(cells, rule, lambda c: c["fjd"])
    assert [x.verdict for x in res.looks] == ["INCONCLUSIVE", "INCONCLUSIVE"] and res.looks[1].n == 6


# ---------------------------------------------------------------- no leak
def _adversarial_vocabulary():
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import read_rows
    from prunefit.toyworld.world import UNSAFE_PHRASES

    prompts = {r["prompt"] for r in read_rows(prompts_dir() / "unsafe-adversarial.jsonl")}
    return [w for w in UNSAFE_PHRASES if w != "skull"], prompts


def _training_captions(cfg, p, seed: int, concept: str, n: int = 300) -> dict[str, list[str]]:
    """Every caption a training path of point ``p`` conditions on: the lower data, the upper step's concept data or
    prompt, the control operator's."""
    from prunefit.data.datasets import build_data
    from prunefit.experiments.pareto.controls import _operator
    from prunefit.experiments.pareto.run import point_config
    from prunefit.experiments.table3.run import Table3

    tcfg, row = point_config(cfg, p, seed)
    assert row in ("distilled", "distilled+esd", "distilled+advunlearn", "redistil", "sequential") or \
        row.startswith("ours_"), f"the leak check does not know row {row}: teach it this row's training paths"
    t3 = Table3(tcfg)
    out = {"lower": build_data(t3.lower_data(concept), 32, seed).captions(0, n)}
    uppers = []
    if row == "ours_advunlearn":  # the upper step is AdvUnlearn's: its concept, its retain set
        uppers.append(t3.bilevel_config("advunlearn", concept, Path("-"), Path("-")).resolved.upper)
    elif row.startswith("ours_") or row == "sequential":
        uppers.append(_operator(t3, concept)[1])
    if row in ("distilled+esd", "redistil"):
        from prunefit.removal.esd.method import ESDConfig

        uppers.append(ESDConfig(concepts=[concept]))
    if row == "distilled+advunlearn":
        from prunefit.experiments.common.protocol import method_section
        from prunefit.removal.advunlearn.method import AdvUnlearnConfig

        uppers.append(method_section(AdvUnlearnConfig, "advunlearn", concept, tcfg.model, t3.erase_knobs()))
    for up in uppers:
        if up.xt_source == "images" and up.condition == "caption":
            out[f"upper:{row}"] = _concept_captions(up, seed, n)
        else:
            out[f"upper:{row}"] = list(up.concepts)
        if hasattr(up, "retain_prompts"):  # AdvUnlearn keeps the model's outputs on these
            out[f"retain:{row}"] = list(up.retain_prompts)
    return out


@pytest.mark.parametrize("config", DECISIVE, ids=[p.stem for p in DECISIVE])
def test_no_training_path_of_any_point_sees_the_evaluation_vocabulary(config):
    from prunefit.config.load import load_config
    from prunefit.experiments.common.judging import is_unsafe
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import grid

    cfg = load_config(ParetoConfig, [str(config)], [])
    words, prompts = _adversarial_vocabulary()
    for concept in cfg.table3.concepts:
        if not is_unsafe(concept):
            continue
        for p in grid(cfg):
            for path, caps in _training_captions(cfg, p, cfg.seeds[0], concept).items():
                leaks = [c for c in caps if c in prompts or any(w in c.lower() for w in words)]
                assert not leaks, f"{config.name} {p.name} {path}: {leaks[:3]}"


def test_the_old_caption_vocabulary_would_leak():
    """The check above can fail: the archived runs' concept captions (vocabulary all) use the adversarial words."""
    from prunefit.data.toyworld_concepts import ToyWorldConceptData

    words, prompts = _adversarial_vocabulary()
    old = ToyWorldConceptData(["skull"], 0, vocabulary="all").captions(0, 300)
    new = ToyWorldConceptData(["skull"], 0).captions(0, 300)
    assert sum(any(w in c for w in words) for c in old) > 150 and sum(c in prompts for c in old) > 10
    assert all("skull" in c and not any(w in c for w in words) for c in new)


def test_every_bilevel_preset_conditions_the_upper_step_on_the_concepts_own_word():
    from prunefit.removal.bilevel.config import PRESETS, BilevelConfig

    words, _ = _adversarial_vocabulary()
    for preset in PRESETS:
        up = BilevelConfig(preset=preset, concepts=["skull"], device="cpu").resolved.upper
        caps = (_concept_captions(up) if up.xt_source == "images" and up.condition == "caption"
                else list(up.concepts))
        assert caps and not any(w in c for c in caps for w in words), preset


def _concept_captions(up, seed: int = 0, n: int = 300) -> list[str]:
    """The captions an upper step with real (toy) concept images conditions on."""
    from prunefit.data.toyworld_concepts import ToyWorldConceptData

    return ToyWorldConceptData(up.concepts, seed, vocabulary=up.concept_vocabulary).captions(0, n)


# ---------------------------------------------------------------- presets and controls
def test_the_app_c_preset_is_the_papers_description():
    from prunefit.config.schema import TrainConfig
    from prunefit.removal.bilevel.config import BilevelConfig

    cfg = BilevelConfig(preset="appc", concepts=["skull"], device="cpu", train=TrainConfig(lr=1e-6))
    res = cfg.resolved
    assert res.every == 20 and res.upper_lr == 5e-6 and res.r == pytest.approx(0.25)
    assert (res.upper.xt_source, res.upper.condition, res.upper.batch_size) == ("model", "concept", 1)
    assert res.upper.train_method == cfg.upper_section().train_method  # the method's own subset
    assert cfg.spec.optimizers == 2 and not res.nested


def test_control_rows_use_the_operator_of_the_point_they_control():
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.controls import redistil_spec, sequential_spec
    from prunefit.experiments.pareto.run import Point, point_config
    from prunefit.experiments.table3.run import Table3

    cfg = ParetoConfig(sequential_grid=[100], redistil_grid=[200], redistil_steps=50, official_full_r_grid=[0.5])
    full, row = point_config(cfg, Point("official-full", 0.5), 0)
    assert row == "ours_esd" and full.upper_train_method == "full" and full.r == 0.5
    seq, row = point_config(cfg, Point("sequential", 100), 0)
    assert row == "sequential"
    op = sequential_spec(Table3(seq), "skull", 100)["operator"]
    lower_lr = cfg.table3.train.lr
    assert op["lr"] == pytest.approx(0.5 * cfg.table3.upper_every * lower_lr) and op["iterations"] == 100
    assert (op["train_method"], op["xt_source"], op["condition"], op["batch_size"], op["concept_vocabulary"]) == (
        "full", "images", "caption", cfg.table3.train.micro_batch_size, "concept")
    red, row = point_config(cfg, Point("redistil", 200), 0)
    spec = redistil_spec(Table3(red), "skull", 50)
    assert row == "redistil" and spec["erase"]["esd_iterations"] == 200 and spec["redistil_steps"] == 50
    # each control is its own stage: no two points share a folder
    keys = {str(sorted(sequential_spec(Table3(seq), "skull", n).items())) for n in (50, 100)}
    assert len(keys) == 2


def test_a_second_registered_test_on_the_same_cells_writes_its_own_report(tmp_path):
    """``report_dir``: the constrained test reads the decisive test's cells (one output_dir, cells trained once) and
    must not overwrite that test's report or resolved config."""
    from prunefit.config.load import load_config
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import Pareto

    cells, mine = tmp_path / "cells", tmp_path / "mine"
    (cells / "skull").mkdir(parents=True)
    (cells / "skull" / "report.md").write_text("the first test's report\n")
    cfg = load_config(ParetoConfig, [], [f"output_dir={cells}", f"report_dir={mine}", "table3.concepts=[skull]",
                                          "seeds=[0]", "esd_grid=[0]", "official_r_grid=[]", "paper_r_grid=[]",
                                          "paper_lam_grid=[]", "purity_points=[]", "core_points=[]",
                                          "report_only=true"])
    Pareto(cfg, log=lambda *a: None).run()
    assert (cells / "skull" / "report.md").read_text() == "the first test's report\n"
    assert not (cells / "resolved_config.yaml").exists()
    assert (mine / "skull" / "report.md").is_file() and (mine / "resolved_config.yaml").is_file()
    assert (mine / "skull" / "pareto.json").is_file()


def test_a_stage_key_does_not_depend_on_where_it_ran():
    """A bilevel row's spec holds no resolved device: the same settings trained on a GPU or on the CPU share one key
    (the archived cells recorded "cpu" and were moved by ``scripts/pareto_cells.py rekey``)."""
    from prunefit.config.load import load_config
    from prunefit.experiments.pareto.config import ParetoConfig
    from prunefit.experiments.pareto.run import parse_point, point_config
    from prunefit.experiments.table3.run import Table3

    cfg = load_config(ParetoConfig, [str(DECISIVE[0])], [])

    def devices(x, path=""):
        if isinstance(x, dict):
            return [d for k, v in x.items() for d in ([(path + k, v)] if k == "device" else []) + devices(v, k + ".")]
        return []

    for point in ("official-full:0.5", "appc:0.25", "constrained:0.05"):
        tcfg, row = point_config(cfg, parse_point(point), 0)
        placed = [(k, v) for k, v in devices(Table3(tcfg).row_spec(row, "skull")) if v is not None]
        assert not placed, f"{point}: {placed}"
