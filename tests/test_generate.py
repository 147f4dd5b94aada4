"""Generation: per-prompt seeds, pixel determinism, manifest contents, resume, and refusing to overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import inline_prompts
from prunefit.errors import OutputError
from prunefit.generation.sample import generate_run, read_manifest
from prunefit.generation.seeds import prompt_seed

SAMPLER = SamplerConfig(steps=3, batch_size=4)
PROMPTS = [f"a prompt number {i}" for i in range(8)]


def _pixels(folder):
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*.png"))}


def test_prompt_seed_depends_on_run_seed_and_id_only():
    assert prompt_seed(0, "00001") == prompt_seed(0, "00001")
    assert len({prompt_seed(0, "00001"), prompt_seed(0, "00002"), prompt_seed(1, "00001")}) == 3
    assert prompt_seed(0, "x", fixed=42) == 42


def test_eight_prompts_twice_are_pixel_identical(tiny, tmp_path):
    recs = inline_prompts(PROMPTS)
    a = generate_run(tiny, recs, SAMPLER, 0, tmp_path / "a")
    b = generate_run(tiny, recs, SAMPLER, 0, tmp_path / "b")
    assert a.generated == b.generated == 8
    pa, pb = _pixels(tmp_path / "a"), _pixels(tmp_path / "b")
    assert pa.keys() == pb.keys() and len(pa) == 8
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_same_prompt_different_ids_get_different_noise(tiny, tmp_path):
    recs = inline_prompts(["the same prompt"] * 2)
    generate_run(tiny, recs, SAMPLER, 0, tmp_path)
    px = _pixels(tmp_path)
    assert not np.array_equal(px["00000"], px["00001"])


def test_images_do_not_depend_on_batch_neighbours(tiny, tmp_path):
    recs = inline_prompts(PROMPTS[:4])
    generate_run(tiny, recs, SamplerConfig(steps=3, batch_size=4), 0, tmp_path / "b4")
    generate_run(tiny, recs, SamplerConfig(steps=3, batch_size=1), 0, tmp_path / "b1")
    p4, p1 = _pixels(tmp_path / "b4"), _pixels(tmp_path / "b1")
    for k in p4:  # identical noise; only BLAS batch-size rounding may differ
        assert np.abs(p4[k].astype(int) - p1[k].astype(int)).max() <= 2


def test_manifest_contents_and_grid(tiny, tmp_path):
    res = generate_run(tiny, inline_prompts(PROMPTS[:3]), SAMPLER, 5, tmp_path)
    rows = [json.loads(x) for x in res.manifest.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["00000", "00001", "00002"]
    r = rows[1]
    assert r["prompt"] == PROMPTS[1] and r["seed"] == prompt_seed(5, "00001") and r["model"] == "tiny"
    assert r["settings"] == {"scheduler": "pndm", "steps": 3, "guidance_scale": 7.5, "height": None,
                             "width": None, "negative_prompt": "", "device": "cpu", "dtype": "float32"}
    assert res.grid is not None and Image.open(res.grid).size[0] > 32


def test_rerun_skips_finished_ids_and_adds_new_ones(tiny, tmp_path):
    generate_run(tiny, inline_prompts(PROMPTS[:2]), SAMPLER, 0, tmp_path)
    before = (tmp_path / "images" / "00000.png").stat().st_mtime_ns
    res = generate_run(tiny, inline_prompts(PROMPTS[:3]), SAMPLER, 0, tmp_path)
    assert (res.generated, res.skipped) == (1, 2)
    assert (tmp_path / "images" / "00000.png").stat().st_mtime_ns == before
    assert len(read_manifest(res.manifest)) == 3


def test_missing_image_is_regenerated(tiny, tmp_path):
    generate_run(tiny, inline_prompts(PROMPTS[:2]), SAMPLER, 0, tmp_path)
    (tmp_path / "images" / "00001.png").unlink()
    res = generate_run(tiny, inline_prompts(PROMPTS[:2]), SAMPLER, 0, tmp_path)
    assert res.generated == 1


def test_changed_settings_refuse_to_overwrite(tiny, tmp_path):
    generate_run(tiny, inline_prompts(PROMPTS[:1]), SAMPLER, 0, tmp_path)
    before = (tmp_path / "images" / "00000.png").read_bytes()
    with pytest.raises(OutputError, match="use a new output_dir"):
        generate_run(tiny, inline_prompts(PROMPTS[:1]), SamplerConfig(steps=4), 0, tmp_path)
    assert (tmp_path / "images" / "00000.png").read_bytes() == before


def test_torn_last_manifest_line_is_ignored(tiny, tmp_path):
    res = generate_run(tiny, inline_prompts(PROMPTS[:1]), SAMPLER, 0, tmp_path)
    with res.manifest.open("a") as fh:
        fh.write('{"id": "00001", "pro')
    assert list(read_manifest(res.manifest)) == ["00000"]


def test_one_manifest_reader_two_rules_for_a_torn_last_line(tmp_path):
    """Generation resumes past a torn last line (it remakes that image); evaluation refuses the unfinished run."""
    from prunefit.errors import DataError
    from prunefit.evaluation.context import read_manifest_rows

    path = tmp_path / "manifest.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "pro')
    assert list(read_manifest(path)) == ["a"]
    with pytest.raises(DataError, match=r"line 2 is not valid JSON \(a torn last line"):
        read_manifest_rows(tmp_path)
    path.write_text('{"id": "a"\n{"id": "b", "prompt": "x"}\n')  # a bad line before the last: corrupt for both
    with pytest.raises(DataError, match=r"line 1 is not valid JSON \(a corrupt manifest"):
        read_manifest(path)
    with pytest.raises(DataError, match=r"line 1 is not valid JSON \(a corrupt manifest"):
        read_manifest_rows(tmp_path)
    path.write_text('{"id": "a"}\n{"id": "a", "prompt": "y"}\n{"prompt": "z"}\n')
    with pytest.raises(DataError, match="line 3 lacks 'id'"):
        read_manifest(path)
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "b"}\n{"id": "a", "prompt": "y"}\n')
    assert [r.get("prompt") for r in read_manifest(path).values()] == ["y", None]  # last row of an id wins
    with pytest.raises(DataError, match="line 2 lacks 'prompt'"):
        read_manifest_rows(tmp_path)


def test_v_prediction_and_other_samplers(tiny_v, tmp_path):
    for name in ("ddim", "euler", "dpm_solver", "ddpm"):
        res = generate_run(tiny_v, inline_prompts(PROMPTS[:2]), SamplerConfig(scheduler=name, steps=2), 0,
                           tmp_path / name)
        assert res.generated == 2


def test_guidance_defaults_to_the_models_own(tmp_path):
    """SD-like models sample at the paper's 7.5; the toy world (and pipelines saved from it) at its 3.0;
    an explicit sampler.guidance_scale always wins, and the manifest records the scale really used."""
    from prunefit.models.components import load_components, save_pipeline

    toy = load_components("toyworld")
    assert toy.default_guidance == 3.0
    recs = inline_prompts(["a red circle on a white background"])
    generate_run(toy, recs, SamplerConfig(batch_size=1), 0, tmp_path / "toy")
    assert next(iter(read_manifest(tmp_path / "toy" / "manifest.jsonl").values()))["settings"]["guidance_scale"] == 3.0
    generate_run(toy, recs, SamplerConfig(batch_size=1, guidance_scale=7.5), 0, tmp_path / "toy75")
    row = next(iter(read_manifest(tmp_path / "toy75" / "manifest.jsonl").values()))
    assert row["settings"]["guidance_scale"] == 7.5
    saved = save_pipeline(toy, tmp_path / "derived")
    assert load_components(str(saved)).default_guidance == 3.0  # prunefit.json travels with the folder
    tiny = load_components("tiny")
    assert tiny.default_guidance == 7.5
    assert not (save_pipeline(tiny, tmp_path / "tinyp") / "prunefit.json").exists()
