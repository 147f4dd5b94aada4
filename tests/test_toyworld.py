"""The toy world: renderer determinism, caption grammar, prompt sets, and the shipped teacher and judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prunefit.toyworld.prompts import prompt_set, prompt_set_names, scene_of, write_prompt_sets
from prunefit.toyworld.world import (
    ARTISTS,
    ERASE_ARTISTS,
    KEEP_ARTISTS,
    UNSAFE_MAIN_WORD,
    UNSAFE_PHRASES,
    caption,
    parse_caption,
    render,
    sample_scene,
)


def test_world_has_the_roles_the_paper_needs():
    assert len(ARTISTS) >= 6 and len(ERASE_ARTISTS) == 3 and len(KEEP_ARTISTS) >= 3
    assert len(UNSAFE_PHRASES) >= 3 and UNSAFE_PHRASES[0] == UNSAFE_MAIN_WORD


def test_render_is_deterministic_and_seed_dependent():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(20)]
    for s in scenes:
        a, b = render(s), render(s)
        assert a.dtype == np.uint8 and a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert len({render(s).tobytes() for s in scenes}) == len(scenes)


def test_caption_round_trips_to_attributes():
    rng = np.random.default_rng(1)
    for _ in range(500):
        scene = sample_scene(rng, p_unsafe=0.3)
        text = caption(scene, rng)
        got = parse_caption(text)
        assert got["obj"] == scene.obj and got["colour"] == scene.colour, text
        assert got["background"] == scene.background and got["position"] == scene.position, text
        assert got["artist"] == scene.artist, text
        assert got["size"] in (None, scene.size), text


def test_prompt_sets_hold_what_they_claim(tmp_path):
    paths = write_prompt_sets(tmp_path)
    assert [p.stem for p in paths] == prompt_set_names()
    rows = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in paths}
    assert len(rows["toy-val"]) >= 500
    for r in rows["toy-val"]:
        assert r["gt_artist"] is None and r["gt_obj"] != "skull"
        assert not any(a.lower() in r["prompt"].lower() for a in ARTISTS)
        assert not any(p in r["prompt"] for p in UNSAFE_PHRASES)
    for a in ARTISTS:
        name = f"artist-{a.lower().replace(' ', '-')}"
        assert len(rows[name]) >= 50 and all(a in r["prompt"] and r["gt_artist"] == a for r in rows[name])
    assert len(rows["unsafe-plain"]) >= 50 and all(UNSAFE_MAIN_WORD in r["prompt"] for r in rows["unsafe-plain"])
    adv = rows["unsafe-adversarial"]
    assert len(adv) >= 50 and all(UNSAFE_MAIN_WORD not in r["prompt"].lower() for r in adv)
    assert all(r["gt_obj"] == "skull" for r in adv + rows["unsafe-plain"])
    assert len({r["id"] for rs in rows.values() for r in rs}) == sum(map(len, rows.values()))
    assert prompt_set("toy-val") == prompt_set("toy-val")  # deterministic
    assert scene_of(adv[0]).unsafe


# ---------------------------------------------------------------- shipped assets

@pytest.fixture(scope="module")
def assets():
    from prunefit.toyworld.paths import assets_dir as default_assets_dir

    d = default_assets_dir()
    assert (d / "teacher" / "model_index.json").is_file(), "toy-world assets missing: run `prunefit toyworld build`"
    return d


def test_shipped_judge_accuracy_on_fixed_held_out_set(assets):
    from prunefit.toyworld.judge import judge_accuracy, load_judge

    acc = judge_accuracy(load_judge(assets / "judge"), n=600, seed=2024)
    assert min(acc.values()) >= 0.95, acc


def test_shipped_teacher_loads_with_plain_diffusers_and_is_deterministic(assets):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(assets / "teacher")
    pipe.set_progress_bar_config(disable=True)
    run = lambda: pipe("a large red circle on a black background", num_inference_steps=5,  # noqa: E731
                       generator=torch.Generator().manual_seed(0), output_type="np").images
    a, b = run(), run()
    assert a.shape == (1, 32, 32, 3) and np.array_equal(a, b)


def test_model_card_and_quality_file_agree(assets):
    info = json.loads((assets / "quality.json").read_text())
    card = (assets / "MODEL_CARD.md").read_text()
    assert f"{info['quality']['unsafe-plain']['unsafe_rate']:.3f}" in card
    assert set(info["quality"]) == set(prompt_set_names())


def test_card_writer_reproduces_the_shipped_card(assets, tmp_path):
    """MODEL_CARD.md is a function of quality.json and the teacher's sizes (the build machine's line aside)."""
    from prunefit.models.tiny import toy_teacher_config
    from prunefit.recipes.toyworld_card import write_model_card

    shipped = (assets / "MODEL_CARD.md").read_text()
    (tmp_path / "MODEL_CARD.md").write_text(shipped)  # its hand-kept build history is carried over
    info = json.loads((assets / "quality.json").read_text())
    written = write_model_card(tmp_path, info, toy_teacher_config()).read_text()
    same = lambda text: [x for x in text.splitlines() if not x.startswith("- Built on:")]  # noqa: E731
    assert same(written) == same(shipped) and len(same(shipped)) > 40


def test_shipped_assets_are_small(assets):
    total = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024, total


CARD_CHECK_PROMPTS = 16
"""Prompts per set for the card check: the card measured the first ``eval_prompts`` (200) of each set."""


def card_bounds(rate: float, n: int, k: int) -> tuple[float, float]:
    """Where the rate over the first ``k`` of ``n`` prompts must lie if ``rate`` over all ``n`` is right."""
    hits = round(rate * n)
    return max(0, hits - (n - k)) / k, min(hits, k) / k


def test_card_bounds_by_hand():
    assert card_bounds(1.0, 200, 16) == (1.0, 1.0) and card_bounds(0.0, 200, 16) == (0.0, 0.0)
    assert card_bounds(0.975, 200, 16) == (11 / 16, 1.0)  # 195 hits: at most 5 misses can fall in the prefix
    assert card_bounds(0.05, 20, 16) == (0.0, 1 / 16)  # 1 hit: the prefix holds it or not


@pytest.mark.experiment
@pytest.mark.parametrize("name", ["unsafe-plain", "toy-val"])
def test_toyworld_metric_reproduces_the_model_card(assets, name, tmp_path):
    """`prunefit generate` + `prunefit evaluate -m toyworld` on the first prompts of a shipped set agree with the
    card's numbers. On these two sets the card's rates are 0 or 1, so every prefix must match them exactly."""
    from prunefit.cli import main

    info = json.loads((assets / "quality.json").read_text())
    n, k = info["config"]["eval_prompts"], CARD_CHECK_PROMPTS
    run = tmp_path / name
    assert main(["generate", "--prompt-file", str(assets / "prompts" / f"{name}.jsonl"), "-o", str(run),
                 f"max_prompts={k}", f"sampler.batch_size={k}"]) == 0
    assert main(["evaluate", str(run), "-m", "toyworld"]) == 0
    values = json.loads((run / "results.json").read_text())["metrics"]["toyworld"]["values"]
    for key in ("unsafe_rate", "fidelity"):
        lo, hi = card_bounds(info["quality"][name][key], n, k)
        assert hi - lo <= 0.05, f"the card does not pin {key} on {k} prompts; pick another set"
        assert lo - 1e-6 <= values[key] <= hi + 1e-6, (key, values[key], (lo, hi))


def test_continued_build_can_decay_its_learning_rate():
    from prunefit.config.schema import ToyworldBuildConfig
    from prunefit.recipes.toyworld_build import teacher_lr_multiplier

    cos = ToyworldBuildConfig(teacher_steps=6300, teacher_warmup=100, teacher_lr_schedule="cosine")
    assert teacher_lr_multiplier(cos, 3900, 3900) == pytest.approx(0.01)  # warm-up restarts at the init step
    assert teacher_lr_multiplier(cos, 4000, 3900) == pytest.approx(1.0)
    assert teacher_lr_multiplier(cos, 6299, 3900) < 0.01  # decays to the floor at teacher_steps
    const = ToyworldBuildConfig(teacher_warmup=200)
    assert teacher_lr_multiplier(const, 5000, 0) == 1.0
    with pytest.raises(Exception, match="teacher_lr_schedule must be"):
        ToyworldBuildConfig(teacher_lr_schedule="linear")
