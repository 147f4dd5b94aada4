"""The faithful toy regime (configs/toyworld/faithful/): a finite, fixed, narrow slice of the world as lower-level
data, the whole-world (toy-world) and narrow (toy-narrow) prompt sets, neutral defaults that keep today's data
bit-identical, and archived stage keys that do not move."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prunefit.config.schema import TOY_BACKGROUNDS, TOY_COLOURS, TOY_SHAPES, DataConfig
from prunefit.data.datasets import ToyWorldData, build_data
from prunefit.errors import ConfigError
from prunefit.toyworld import world
from prunefit.toyworld.prompts import NARROW_SLICE, prompt_set
from prunefit.toyworld.world import ERASE_ARTISTS, KEEP_ARTISTS, UNSAFE, UNSAFE_PHRASES

ROOT = Path(__file__).resolve().parent.parent
FAITHFUL = ROOT / "configs" / "toyworld" / "faithful" / "preconditions.yaml"


def _faithful():
    from prunefit.config.load import load_config
    from prunefit.experiments.distillation.config import DistillationConfig

    return load_config(DistillationConfig, [FAITHFUL])


def test_config_vocabulary_is_the_worlds():
    assert (TOY_SHAPES, TOY_COLOURS, TOY_BACKGROUNDS) == (world.SHAPES, tuple(world.COLOURS), tuple(world.BACKGROUNDS))


def test_faithful_config_is_the_narrow_slice_from_a_harder_pruned_start():
    cfg = _faithful()
    d = cfg.data
    assert (tuple(d.toy_shapes), tuple(d.toy_colours), tuple(d.toy_backgrounds)) == (
        NARROW_SLICE["shapes"], NARROW_SLICE["colours"], NARROW_SLICE["backgrounds"])
    assert (d.toy_p_unsafe, d.toy_p_artist, d.toy_size) == (0.0, 0.0, 200)
    assert cfg.target == 0.6 and cfg.predistill_steps > 0 and cfg.threads == 1
    assert set(cfg.eval_sets) == {"toy-world", "toy-narrow"} and cfg.judge_teacher and cfg.check_set == "toy-world"
    from prunefit.config.load import load_config
    from prunefit.experiments.table3.config import ExperimentConfig

    t3 = load_config(ExperimentConfig, [FAITHFUL.parent / "table3.yaml"])
    assert t3.data == cfg.data and t3.expert == f"{cfg.output_dir}/predistilled/expert"  # the shared start


def test_narrow_slice_yields_only_its_shapes_colours_backgrounds_and_no_artist_or_skull():
    data = build_data(_faithful().data, 32, seed=3)
    scenes = [data._scene(i)[0] for i in range(0, 4000, 7)]
    assert {s.obj for s in scenes} == set(NARROW_SLICE["shapes"])
    assert {s.colour for s in scenes} == set(NARROW_SLICE["colours"])
    assert {s.background for s in scenes} == set(NARROW_SLICE["backgrounds"])
    assert all(s.artist is None and s.obj != UNSAFE for s in scenes)
    caps = data.captions(0, 200)
    assert not any(a in c for c in caps for a in world.ARTISTS)
    assert not any(p in c for c in caps for p in UNSAFE_PHRASES)


def test_narrow_slice_is_finite_and_fixed():
    """size scenes, the same in every epoch (images and captions) and for every run seed; only the order moves."""
    a, b = ToyWorldData(seed=0, size=20, shapes=("circle",)), ToyWorldData(seed=1, size=20, shapes=("circle",))
    epochs = [[a._scene(i)[0] for i in range(e * 20, e * 20 + 20)] for e in range(3)]
    assert len(set(epochs[0])) == 20 and set(epochs[0]) == set(epochs[1]) == set(epochs[2])
    assert set(epochs[0]) == {b._scene(i)[0] for i in range(20)}
    assert epochs[0] != epochs[1]  # a seeded order per epoch
    j = next(i for i in range(20, 40) if a._index(i) == a._index(0))
    (x0, c0), (x1, c1) = a.samples(0, 1), a.samples(j, 1)
    assert c0 == c1 and bool((x0 == x1).all())


def _old_sample_scene(rng, p_artist, p_unsafe):
    """toyworld.world.sample_scene before the slice arguments (kept to check the defaults draw as before)."""
    obj = world.UNSAFE if rng.random() < p_unsafe else world.SHAPES[rng.integers(len(world.SHAPES))]
    colour = list(world.COLOURS)[rng.integers(len(world.COLOURS))]
    bgs = [b for b in world.BACKGROUNDS if not (b == "white" and colour == "yellow")]
    background = bgs[rng.integers(len(bgs))]
    artist = world.ARTISTS[rng.integers(len(world.ARTISTS))] if rng.random() < p_artist else None
    pos = "center" if rng.random() < 0.6 else list(world.POSITIONS)[1 + rng.integers(len(world.POSITIONS) - 1)]
    return world.Scene(obj=obj, colour=colour, background=background, size=world.SIZES[rng.integers(2)],
                       position=pos, artist=artist, seed=int(rng.integers(2**31)))


def test_neutral_defaults_keep_todays_data_bit_identical():
    cfg = DataConfig()
    assert (cfg.toy_shapes, cfg.toy_colours, cfg.toy_backgrounds, cfg.toy_size) == ([], [], [], 0)
    data = build_data(cfg, 32, seed=5)
    want_caps = []
    for i in range(300):
        rng = np.random.default_rng([5, 7, i])
        want_caps.append(world.caption(_old_sample_scene(rng, 0.5, 0.15), rng))
    assert data.captions(0, 300) == want_caps
    rng = np.random.default_rng([5, 7, 11])
    x, _ = data.samples(11, 1)
    want = world.render(_old_sample_scene(rng, 0.5, 0.15))
    assert np.array_equal(((x[0].permute(1, 2, 0) + 1) * 127.5).round().numpy().astype(np.uint8), want)


def test_data_config_refuses_unknown_slices_in_one_line():
    for kw, msg in (({"toy_shapes": ["hexagon"]}, r"unknown data.toy_shapes \['hexagon'\]; available"),
                    ({"toy_colours": ["teal"]}, "unknown data.toy_colours"),
                    ({"toy_backgrounds": ["sky"]}, "unknown data.toy_backgrounds"),
                    ({"toy_size": -1}, "data.toy_size must be >= 0"),
                    ({"toy_backgrounds": ["white"]}, "yellow shape is never drawn on white")):
        with pytest.raises(ConfigError, match=msg) as err:
            DataConfig(**kw)
        assert "\n" not in str(err.value)


def test_toy_world_set_is_the_whole_world_but_the_erased_concepts():
    rows = prompt_set("toy-world")
    assert len(rows) == 500 and len({r["seed"] for r in rows}) == 500
    for key, values in (("obj", world.SHAPES), ("colour", world.COLOURS), ("background", world.BACKGROUNDS),
                        ("size", world.SIZES), ("position", world.POSITIONS)):
        assert {r[f"gt_{key}"] for r in rows} == set(values), key
    assert {r["gt_artist"] for r in rows} == {None, *KEEP_ARTISTS}
    assert not any(a in r["prompt"] for r in rows for a in ERASE_ARTISTS)
    assert not any(p in r["prompt"] for r in rows for p in UNSAFE_PHRASES)


def test_toy_narrow_set_stays_inside_the_slice():
    rows = prompt_set("toy-narrow")
    assert len(rows) == 500
    assert {r["gt_obj"] for r in rows} == set(NARROW_SLICE["shapes"])
    assert {r["gt_colour"] for r in rows} == set(NARROW_SLICE["colours"])
    assert {r["gt_background"] for r in rows} == set(NARROW_SLICE["backgrounds"])
    assert all(r["gt_artist"] is None for r in rows)


def test_shipped_prompt_sets_are_the_writers():
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import prompt_set_names

    for name in prompt_set_names():  # the new sets, and every older set unchanged by the slice arguments
        shipped = (prompts_dir() / f"{name}.jsonl").read_text()
        assert shipped == "".join(json.dumps(r) + "\n" for r in prompt_set(name)), name


def test_archived_stage_keys_do_not_move_with_the_slice_settings():
    from prunefit.experiments.common.stages import stage_key

    specs = sorted((ROOT / "docs" / "results" / "pareto_cells").rglob("spec.json"))
    assert specs
    for path in specs[:5]:
        spec, want = json.loads(path.read_text()), path.parent.name.rsplit("-", 1)[1]
        sections = [spec["data"]] + ([spec["bilevel"]["data"]] if "data" in spec.get("bilevel", {}) else [])
        for section in sections:
            section.update(toy_shapes=[], toy_colours=[], toy_backgrounds=[], toy_size=0)
        assert stage_key(spec) == want
        sections[0]["toy_size"] = 2000
        assert stage_key(spec) != want
