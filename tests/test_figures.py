"""Figures: the labelled grid's geometry, the sidecar's cells, per-model image caching, the prompt sets."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from prunefit.config.schema import SamplerConfig
from prunefit.errors import ConfigError, DataError, OutputError
from prunefit.experiments.figures.config import FigureModel, FiguresConfig, model_slug
from prunefit.experiments.figures.run import is_erased, read_figure_prompts, render_figure
from prunefit.generation.grid import GridStyle, label_font, labelled_grid, wrap_text
from prunefit.toyworld.figure_prompts import toy_figure_prompts

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "configs" / "toyworld" / "prompts"
SD = ROOT / "configs" / "sd21" / "prompts"
STYLE = GridStyle(cell=64, pad=4, label_width=120, caption_lines=3, font_size=12)
SAMPLER = SamplerConfig(steps=2, batch_size=4)


def test_grid_size_is_cells_plus_label_margins():
    # line height 12 + 12 // 3 = 16; header = (3 caption lines + 1 marker line) * 16 + pad 4 = 68
    imgs = [[Image.new("RGB", (32, 32), (r * 40, c * 40, 0)) for c in range(3)] for r in range(2)]
    sheet = labelled_grid(imgs, ["a", "b"], ["x", "y", "z"], [True, False, False], style=STYLE)
    assert sheet.size == (120 + 3 * 64 + 4 * 4, 68 + 2 * 64 + 3 * 4) == (328, 208)
    # cell (row 1, col 2) starts at x = 120 + 4 + 2 * 68 = 260, y = 68 + 4 + 68 = 140 and holds that image
    assert sheet.getpixel((260 + 10, 140 + 10)) == (40, 80, 0)
    assert sheet.getpixel((124 - 1, 72 + 10)) == (200, 30, 30)  # the erased column's red frame
    assert sheet.getpixel((192 - 1, 72 + 10)) == (255, 255, 255)  # an unmarked column has none
    with pytest.raises(ValueError, match="2 row labels"):
        labelled_grid(imgs, ["a"], ["x", "y", "z"], style=STYLE)


def test_wrapped_captions_fit_their_column_and_end_in_an_ellipsis():
    font = label_font(12)
    text = "The Great Wave of Kanagawa by Hokusai, a woodblock print of a very large wave off the coast"
    lines = wrap_text(text, font, 64, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 64 for line in lines)
    assert wrap_text("short", font, 64, 3) == ["short"]
    assert " ".join(wrap_text("Pablo Picass", font, 200, 3)) == "Pablo Picass"


def _expert(tmp_path: Path) -> Path:
    """A toy-teacher expert with its first width group pruned (a different model from the teacher)."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import expert_info, save_expert
    from prunefit.pruning.materialize import materialize
    from prunefit.pruning.spec import gate_spec

    base = load_components("toyworld").unet
    spec = gate_spec(base, 8)
    arch = torch.ones(spec.dim)
    arch[: spec.width[0].size // 2] = 0
    unet = copy.deepcopy(base)
    kept = materialize(unet, spec, arch)
    return save_expert(unet, expert_info(base, spec, arch, "toyworld", kept, 0.95, {}), tmp_path / "expert")


def test_figure_geometry_sidecar_and_only_new_rows_render(tmp_path):
    prompts, out = TOY / "table6_fig6_erasure_after_pruning.csv", tmp_path / "fig"
    expert = _expert(tmp_path)
    first = [FigureModel("Toy teacher", "toyworld"), FigureModel("Pruned expert", str(expert))]
    a = render_figure(first, prompts, out, sampler=SAMPLER, erased=["Pablo Blocks"], max_prompts=3, style=STYLE)
    assert a.generated == {"Toy teacher": 3, "Pruned expert": 3}
    assert [r.kind for r in a.rows] == ["pipeline", "expert"]
    assert Image.open(a.figure).size == a.size == (120 + 3 * 64 + 4 * 4, 68 + 2 * 64 + 3 * 4)

    third = FigureModel("Teacher again", "toyworld")
    b = render_figure([*first, third], prompts, out, sampler=SAMPLER, erased=["Pablo Blocks"], max_prompts=3,
                      style=STYLE)
    assert b.generated == {"Toy teacher": 0, "Pruned expert": 0, "Teacher again": 3}
    assert b.skipped == {"Toy teacher": 3, "Pruned expert": 3, "Teacher again": 0}
    assert Image.open(b.figure).size == (328, 68 + 3 * 64 + 4 * 4)

    side = json.loads(b.sidecar.read_text())
    assert [m["name"] for m in side["models"]] == ["Toy teacher", "Pruned expert", "Teacher again"]
    assert len(side["cells"]) == 3 * 3
    assert [p["erased"] for p in side["prompts"]] == [False, True, False]  # only the Pablo Blocks column
    for cell in side["cells"]:
        assert (out / cell["image"]).is_file() and cell["prompt_id"] == side["prompts"][cell["column"]]["id"]
        assert cell["seed"] == 601 + cell["column"]  # the file's fixed seed, the same in every row
    px = {(c["row"], c["column"]): Image.open(out / c["image"]).tobytes() for c in side["cells"]}
    assert px[(0, 2)] == px[(2, 2)]  # the same model at the same seed: identical pixels
    assert px[(0, 2)] != px[(1, 2)]  # the expert is another model

    before = b.figure.read_bytes()
    with pytest.raises(OutputError, match="different sampler"):  # cached images never mix sampler settings
        render_figure(first, prompts, out, sampler=SamplerConfig(steps=3), max_prompts=3, style=STYLE)
    assert b.figure.read_bytes() == before

    page = b.html.read_text()
    assert page.count('width="160"') == 9  # the toy world's 32 px images shown 5x
    assert page.count("<img ") == 9 and 'src="models/pruned-expert/images/fig6-03.png"' in page
    assert "a large yellow star on a gray background by Pablo Blocks" in page and "Teacher again" in page


def test_bad_figure_inputs_fail_before_generating(tmp_path):
    from prunefit.config.load import load_config

    with pytest.raises(ConfigError, match="no models"):
        FiguresConfig(prompt_file="x.csv")
    with pytest.raises(ConfigError, match="appear twice"):
        FiguresConfig(models=[FigureModel("Ours (ESD)", "a"), FigureModel("ours esd", "b")], prompt_file="x.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no model_index.json"):
        render_figure([FigureModel("T", "toyworld"), FigureModel("E", str(empty))], TOY / "table4_fig1_pruned.csv",
                      tmp_path / "out", sampler=SAMPLER)
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt,role\na,a red circle,forgotten\n")
    with pytest.raises(DataError, match="role 'forgotten'"):
        read_figure_prompts(bad)
    cfg = load_config(FiguresConfig, [], ["models=[{name: Teacher, path: toyworld}, {name: E, path: e, kind: expert}]",
                                          f"prompt_file={TOY / 'table4_fig1_pruned.csv'}", "sampler.steps=2"])
    assert [(m.name, m.kind) for m in cfg.models] == [("Teacher", "auto"), ("E", "expert")]
    assert model_slug("Distilled + ESD") == "distilled-esd"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_paper_prompt_sets_are_printed_verbatim_with_roles():
    t4, t5, t6 = (_rows(SD / f"{n}.csv") for n in ("table4_fig1_pruned", "table5_fig2_artists",
                                                    "table6_fig6_erasure_after_pruning"))
    assert [r["prompt"] for r in t4] == ["The Artist's House at Argenteuil by Claude Monet",
                                         "Child in a Straw Hat by Mary Cassatt"]
    assert len(t5) == 8 and t5[1]["prompt"] == "The Three Dancers by Pablo Picass"  # the paper's typo
    assert t5[6]["prompt"] == "The Great Wave of Kanagawa by Hokusai"
    assert len(t6) == 6 and t6[5]["prompt"] == "The Great Wave of Kanagawa by Hokusa"  # the paper's typo
    assert [r["role"] for r in t5] == ["erased"] * 3 + ["neutral", "kept", "kept", "kept", "neutral"]
    assert [r["role"] for r in t6] == ["erased"] * 3 + ["kept", "neutral", "kept"]
    for rows in (t4, t5, t6):
        assert len({r["id"] for r in rows}) == len({r["seed"] for r in rows}) == len(rows)
    recs = read_figure_prompts(SD / "table6_fig6_erasure_after_pruning.csv")
    assert [is_erased(r, ["Van Gogh"]) for r in recs] == [False, False, True, False, False, False]
    assert [is_erased(r, None) for r in recs] == [True, True, True, False, False, False]


def test_toy_prompt_sets_are_the_grammars_and_cover_every_role():
    from prunefit.toyworld.world import ERASE_ARTISTS, KEEP_ARTISTS, UNSAFE, parse_caption

    built = toy_figure_prompts()
    for name, rows in built.items():
        assert _rows(TOY / f"{name}.csv") == [{k: str(v) for k, v in r.items()} for r in rows], name
    t6 = built["table6_fig6_erasure_after_pruning"]
    assert {r["concept"] for r in t6 if r["role"] == "erased"} == {*ERASE_ARTISTS, UNSAFE}
    assert {r["concept"] for r in built["table5_fig2_artists"]} == {*ERASE_ARTISTS, *KEEP_ARTISTS, ""}
    for rows in built.values():
        for r in rows:  # every caption parses back to the concept it is filed under
            parsed = parse_caption(r["prompt"])
            assert (parsed["artist"] or (UNSAFE if parsed["obj"] == UNSAFE else "")) == r["concept"]
    assert "skull" not in t6[4]["prompt"] and parse_caption(t6[4]["prompt"])["obj"] == UNSAFE  # adversarial


def test_cli_refuses_bad_figure_configs_with_exit_2(tmp_path, capsys):
    from prunefit.cli import main

    prompts = f"prompt_file={TOY / 'table4_fig1_pruned.csv'}"
    assert main(["experiment", "figures", prompts, f"output_dir={tmp_path / 'o'}"]) == 2
    assert "no models" in capsys.readouterr().err
    assert main(["experiment", "figures", prompts, "models=[{name: T, path: toyworld, kind: dense}]"]) == 2
    assert "unknown figure model kind 'dense'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
