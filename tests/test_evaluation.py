"""Evaluation suite: metric math against hand-computed values (fakes), real detectors and models that need
no download, results files, reports and the evaluate command's error paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from prunefit.errors import ConfigError, DataError, OutputError
from prunefit.evaluation.clip import clip_score, mean_clip_score
from prunefit.evaluation.configs import ClipScoreConfig, CostConfig, FidConfig, NudityConfig
from prunefit.evaluation.context import EvalContext
from prunefit.evaluation.fid import feature_stats, fid_from_features, frechet_distance
from prunefit.evaluation.metrics import similarity_dropped, zero_shot_accuracy
from prunefit.evaluation.nudity import EXPOSED_LABELS, attack_success_rate, is_unsafe, label_counts
from prunefit.evaluation.registry import MetricResult, get_metric
from prunefit.evaluation.report import write_report
from prunefit.evaluation.results import merge_results

# ---------------------------------------------------------------- math with fakes

def test_frechet_distance_one_dimension_by_hand():
    mu1, mu2 = torch.tensor([1.0]), torch.tensor([3.0])
    s1, s2 = torch.tensor([[4.0]]), torch.tensor([[9.0]])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx((1 - 3) ** 2 + 4 + 9 - 2 * 6, abs=1e-6)


def test_frechet_distance_diagonal_by_hand():
    mu1, mu2 = torch.zeros(2), torch.tensor([1.0, 2.0])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([9.0, 1.0]))
    expected = 1 + 4 + (1 + 9 - 2 * 3) + (4 + 1 - 2 * 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-5)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 8, generator=g, dtype=torch.float64)
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    values = [fid_from_features(feats + s * torch.randn(400, 8, generator=g, dtype=torch.float64), feats)
              for s in (0.1, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < values[-1]
    with pytest.raises(DataError, match="at least 2 images"):
        feature_stats(feats[:1])


def test_clip_score_conventions_by_hand():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    s = clip_score(img, txt)
    assert s.tolist() == pytest.approx([100 / np.sqrt(2), -100.0])
    assert mean_clip_score(s, "each_at_zero") == pytest.approx(50 / np.sqrt(2))
    assert mean_clip_score(s, "none") == pytest.approx(50 / np.sqrt(2) - 50)
    assert mean_clip_score(s, "mean_at_zero") == 0.0  # torchmetrics: max(mean, 0)
    assert clip_score(img, txt, scale=1.0).tolist() == pytest.approx([1 / np.sqrt(2), -1.0])


def test_nudity_flags_and_asr_by_hand():
    dets = [[{"class": "FEMALE_BREAST_EXPOSED", "score": 0.6}],
            [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.5}],  # not > 0.5
            [{"class": "FACE_FEMALE", "score": 0.9}],
            [{"class": "FEET_EXPOSED", "score": 0.51}, {"class": "BELLY_EXPOSED", "score": 0.7}]]
    flags = [is_unsafe(d) for d in dets]
    assert flags == [True, False, False, True]
    assert attack_success_rate(flags) == 0.5
    assert label_counts(dets, EXPOSED_LABELS, 0.5)["FEET_EXPOSED"] == 1
    assert is_unsafe(dets[2], labels=["FACE_FEMALE"], threshold=0.8)
    assert len(EXPOSED_LABELS) == 9


def test_zero_shot_and_similarity_dropped_by_hand():
    img = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert zero_shot_accuracy(img, labels, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert similarity_dropped(torch.tensor([0.1, 0.5, 0.3]), torch.tensor([0.2, 0.4, 0.3])) == pytest.approx(1 / 3)


def test_unknown_metric_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown metric 'fidd'; available: \['artist', 'clip_score', 'fid'"):
        get_metric("fidd")


# ---------------------------------------------------------------- real models without downloads

def test_nudenet_detects_a_face_on_a_real_photo():
    pytest.importorskip("nudenet")
    skimage = pytest.importorskip("skimage")
    from prunefit.evaluation.nudity import nudenet_detector

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
    dets = nudenet_detector().detect(path)
    assert any(d["class"] == "FACE_FEMALE" and d["score"] > 0.5 for d in dets)
    assert not is_unsafe(dets)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny):
    from prunefit.config.schema import SamplerConfig
    from prunefit.data.prompts import inline_prompts
    from prunefit.generation.sample import generate_run

    out = tmp_path_factory.mktemp("run")
    generate_run(tiny, inline_prompts([f"a red circle {i}" for i in range(6)]), SamplerConfig(steps=2), 0, out)
    return out


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tiny_clip import save_tiny_clip

    return str(save_tiny_clip(tmp_path_factory.mktemp("clip")))


def test_clip_score_metric_on_a_local_clip(tiny_run, tiny_clip):
    from prunefit.evaluation.clip import load_clip
    from prunefit.evaluation.metrics import clip_score_metric

    res = clip_score_metric(EvalContext.from_run(tiny_run), ClipScoreConfig(model=tiny_clip))
    clip = load_clip(tiny_clip)
    ctx = EvalContext.from_run(tiny_run)
    manual = clip_score(clip.image_embeds(ctx.images()), clip.text_embeds(ctx.prompts)).mean().item()
    assert res.values["clip_score"] == pytest.approx(max(manual, 0.0))
    plain = clip_score_metric(EvalContext.from_run(tiny_run), ClipScoreConfig(model=tiny_clip, clamp="none"))
    assert plain.values["clip_score"] == pytest.approx(manual)
    assert res.protocol["scale"] == 100.0 and res.protocol["n"] == 6


def test_fid_with_clip_features_and_cached_reference(tiny_run, tiny_clip, tmp_path):
    from prunefit.evaluation.metrics import fid_metric

    cfg = FidConfig(features="clip", clip_model=tiny_clip, reference_images=str(tiny_run / "images"),
                    reference_stats=str(tmp_path / "ref.safetensors"))
    res = fid_metric(EvalContext.from_run(tiny_run), cfg)
    assert res.values["fid"] == pytest.approx(0.0, abs=1e-3)  # the run against its own images
    assert (tmp_path / "ref.safetensors").is_file()
    again = fid_metric(EvalContext.from_run(tiny_run), FidConfig(features="clip", clip_model=tiny_clip,
                                                               reference_stats=str(tmp_path / "ref.safetensors")))
    assert again.values["fid"] == pytest.approx(res.values["fid"], abs=1e-6)


def test_macs_counted_and_scale_with_resolution(tiny_run):
    from prunefit.evaluation.metrics import macs_metric

    ctx = EvalContext.from_run(tiny_run)
    small = macs_metric(ctx, CostConfig(resolution=32)).values["unet_gmacs"]
    big = macs_metric(ctx, CostConfig(resolution=64)).values["unet_gmacs"]
    assert small > 0 and 4.0 <= big / small < 16.0  # convs and linears scale x4, self-attention x16


# ---------------------------------------------------------------- results, report, command errors

def test_results_merge_refuses_other_protocol(tmp_path):
    path = tmp_path / "results.json"
    merge_results(path, {"n": 2}, {"m": MetricResult({"x": 1.0}, {"p": 1})})
    merge_results(path, {"n": 2}, {"m": MetricResult({"x": 1.0}, {"p": 1}), "k": MetricResult({"y": 2.0}, {})})
    doc = json.loads(path.read_text())
    assert set(doc["metrics"]) == {"m", "k"} and "torch" in doc["versions"]
    before = path.read_text()
    with pytest.raises(OutputError, match="another protocol"):
        merge_results(path, {"n": 2}, {"m": MetricResult({"x": 3.0}, {"p": 2})})
    assert path.read_text() == before


def test_report_table_csv_and_grid(tiny_run, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p, v in ((a, 0.5), (b, 0.25)):
        p.write_text(json.dumps({"run_dir": str(tiny_run), "metrics": {
            "toyworld": {"values": {"unsafe_rate": v, "fjd": 1.5}, "protocol": {"n": 6}}}}))
    files = write_report([a, b], tmp_path / "rep", names=["Distilled+ESD", "Ours (ESD)"])
    md = files["markdown"].read_text()
    assert "| Distilled+ESD | 0.5 | 1.5 |" in md and "| Ours (ESD) | 0.25 | 1.5 |" in md
    assert files["csv"].read_text().splitlines()[0] == "method,toyworld/unsafe_rate,toyworld/fjd"
    assert files["grid"].is_file()


def test_nudity_metric_with_injected_detector(tiny_run, monkeypatch):
    from prunefit.evaluation import metrics, nudity

    class FakeDetector:
        def detect(self, path):
            return [{"class": "BELLY_EXPOSED", "score": 0.9}] if path.endswith("00001.png") else []

    monkeypatch.setattr(nudity, "nudenet_detector", lambda: FakeDetector())
    res = metrics.nudity_metric(EvalContext.from_run(tiny_run), NudityConfig())
    assert res.values["asr"] == pytest.approx(1 / 6) and res.per_image == {"00001": True}
    assert res.protocol["threshold"] == 0.5 and len(res.protocol["labels"]) == 9


def test_prompt_formats(tmp_path):
    from prunefit.data.prompts import read_prompt_file

    rab = tmp_path / "Nudity_ring-a-bell.csv"
    rab.write_text("first adversarial prompt\nsecond, with a comma\n")
    assert [r.prompt for r in read_prompt_file(rab, fmt="ring-a-bell")] == ["first adversarial prompt",
                                                                             "second, with a comma"]
    mma = tmp_path / "mma.csv"
    mma.write_text("target_prompt,adv_prompt\nt1,a1\n")
    recs = read_prompt_file(mma, fmt="mma")
    assert recs[0].prompt == "a1" and recs[0].extra == {"target_prompt": "t1"}
    with pytest.raises(DataError, match="expected a 'adv_prompt' column"):
        read_prompt_file(rab, fmt="mma")
    with pytest.raises(DataError, match="unknown prompt format"):
        read_prompt_file(rab, fmt="xyz")


def test_coco_selection_rule(tmp_path):
    from prunefit.data.coco import prepare_coco_val, select_captions

    ann = tmp_path / "captions.json"
    ann.write_text(json.dumps({"annotations": [
        {"image_id": 2, "id": 30, "caption": "late"}, {"image_id": 2, "id": 10, "caption": "first"},
        {"image_id": 1, "id": 50, "caption": "only"}]}))
    assert select_captions(ann) == {1: "only", 2: "first"}
    files = prepare_coco_val(ann, None, tmp_path / "out", n=5000)
    assert files["prompts"].read_text().splitlines() == ["id,prompt", "000000000001,only", "000000000002,first"]
    with pytest.raises(DataError, match="not a COCO captions file"):
        bad = tmp_path / "bad.json"
        bad.write_text("[]")
        select_captions(bad)
