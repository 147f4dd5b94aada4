"""The Pareto experiment on an SD model (``table3.model=tiny``) by the paper's protocol: every (point, seed) cell
trained through Table 3's stages and judged with the evaluation registry's real code paths (NudeNet per-prompt flags,
FID over a random local CLIP's features against cached COCO-val statistics, CLIP score), ASR and FID intervals over
seeds and prompts, the registered rule on each seed's FID; toy-only settings refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_table3_sd import sd_inputs  # noqa: F401  (the fixture: random CLIP, COCO-style images, MMA prompts)

from prunefit.config.load import load_config
from prunefit.errors import ConfigError, DataError
from prunefit.evaluation.fid import feature_stats, frechet_distance, frechet_distance_legacy
from prunefit.experiments.common.sd_judging import FidToReference, flags
from prunefit.experiments.pareto.config import ParetoConfig
from prunefit.experiments.pareto.run import Pareto, Point


def _overrides(tmp_path: Path, inp: dict, registered: bool = True) -> list[str]:
    t3 = ["model=tiny", "concepts=[nudity]", "lower_steps=1", "eval_prompts=2", "esd_ddim_steps=3", "upper_every=1",
          "train.micro_batch_size=2", "train.checkpoint_every=100", "data.num_workers=0",
          f"sd.adversarial_prompts={inp['prompts']}", "sd.prompt_format=mma",
          f"sd.coco_annotations={inp['annotations']}",
          f"sd.coco_images={inp['images']}", "sd.coco_n=2", "sd.coco_size=32", "sd.sampler.steps=1",
          "sd.fid.mode=torchmetrics", "sd.fid.features=clip", f"sd.fid.clip_model={inp['clip']}",
          f"sd.clip_score.model={inp['clip']}", f"sd.artist.model={inp['clip']}"]
    return [f"output_dir={tmp_path / 'p'}", "seeds=[0, 1]", "esd_grid=[0, 1]", "official_r_grid=[0.5]",
            "paper_lam_grid=[]", "paper_r_grid=[]", "purity_points=[]", "n_boot=20",
            *(["registered.primary=official:0.5", "registered.seeds=[0, 1]"] if registered else []),
            *[f"table3.{o}" for o in t3]]


@pytest.mark.experiment  # ~8 s of CPU: make test-experiments (make test keeps the tiny SD Table 3)
def test_pareto_runs_on_tiny_sd_judged_by_nudenet_fid_and_clip_score(tmp_path, sd_inputs):  # noqa: F811
    cfg = load_config(ParetoConfig, [], _overrides(tmp_path, sd_inputs))
    logs: list[str] = []
    summary = Pareto(cfg, logs.append).run()["nudity"]
    assert len([m for m in logs if m.startswith("[pareto] nudity: ")]) == 6  # 3 points x 2 seeds
    croot = tmp_path / "p" / "nudity"
    files = sorted(croot.glob("cells/*/eval-2-sd-*.json"))  # the file name carries the SD protocol's key
    assert len(files) == 6
    cells = [json.loads(f.read_text()) for f in files]
    for c in cells:
        assert len(c["shown"]) == 2 and c["asr"] == np.mean(c["shown"]) and np.isfinite(c["fid"])
        assert c["safety_metric"] == "nudity_asr" and np.isfinite(c["clip_score"])
        # the flags are NudeNet's, read from the registry's per-image file of the adversarial run
        assert c["shown"] == flags(Path(c["samples"]), "nudity_asr")
        feats = FidToReference.from_file(c["fid_stats"])
        assert Path(c["fid_features"]).is_file()
        from safetensors.numpy import load_file

        assert feats.distance(load_file(c["fid_features"])["features"]) == pytest.approx(c["fid"], rel=1e-4)
    by_point = {p["point"]: p for p in summary["points"]}
    assert list(by_point) == ["two-stage-esd0", "two-stage-esd1", "official-r0.5"]
    for name, p in by_point.items():
        mine = [c for c in cells if c["point"] == name]
        assert p["seeds"] == [0, 1] and p["fid"]["low"] <= p["fid"]["estimate"] <= p["fid"]["high"]
        assert p["fid"]["estimate"] == pytest.approx(np.mean([c["fid"] for c in mine]), rel=1e-4)
        assert p["clip_score"] == pytest.approx(np.mean([c["clip_score"] for c in mine]))
    # the registered rule's per-seed Delta reads each cell's FID as the fid metric measured it
    deltas = summary["registered"]["primary"]["deltas"]
    fid = {c["seed"]: c["fid"] for c in cells if c["point"] == "official-r0.5"}
    assert [d["seed"] for d in deltas] == [0, 1] and all(d["fjd"] == fid[d["seed"]] for d in deltas)
    report = (croot / "report.md").read_text()
    assert "FID [95% CI]" in report and "Delta FID" in report and "FJD" not in report
    assert summary["verdict"].split(":")[0] in ("YES", "NO", "INCONCLUSIVE")
    assert (croot / "pareto.png").is_file()
    # every cell is reused: nothing is trained or judged again
    logs.clear()
    Pareto(load_config(ParetoConfig, [], _overrides(tmp_path, sd_inputs)), logs.append).run()
    assert not [m for m in logs if m.startswith("[pareto] nudity: ")]


def test_fid_against_fixed_statistics_is_the_frechet_distance_of_both_conventions():
    g = torch.randn(40, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    r = torch.randn(60, 6, dtype=torch.float64) + 0.5
    mu, sigma = feature_stats(r)
    stat = FidToReference(mu.numpy(), sigma.numpy())
    assert stat.distance(g.numpy()) == pytest.approx(frechet_distance(*feature_stats(g), mu, sigma), rel=1e-8)
    assert stat.distance(g.numpy()) == pytest.approx(frechet_distance_legacy(*feature_stats(g), mu, sigma), rel=1e-6)
    assert stat([g.numpy(), r.numpy()]) == pytest.approx((stat.distance(g.numpy()) + stat.distance(r.numpy())) / 2)


@pytest.mark.parametrize("override, match", [
    ("val_set=toy-world", "val_set, side_val_set and val_offset pick toy-world"),
    ("side_val_set=toy-narrow", "val_set, side_val_set and val_offset pick toy-world"),
    ("val_offset=300", "val_set, side_val_set and val_offset pick toy-world"),
    ("side_prompts=50", "side_prompts measures toy-world side sets"),
    ("purity_points=[two-stage:0]", "purity_points rerun points with the toy world's concept share"),
    ("table3.concepts=[skull]", "belong to the toy world"),
    ("table3.lower_concept_share=0", "lower_concept_share sets the toy world")])
def test_toy_only_settings_are_refused_on_sd_in_one_line(tmp_path, override, match):
    ov = [f"output_dir={tmp_path}", "table3.model=tiny", "purity_points=[]", override]
    with pytest.raises(ConfigError, match=match) as err:
        load_config(ParetoConfig, [], ov)
    assert "\n" not in str(err.value)


def test_the_default_purity_points_are_refused_on_sd_and_kept_on_the_toy_world(tmp_path):
    with pytest.raises(ConfigError, match=r"set purity_points=\[\] on tiny"):
        load_config(ParetoConfig, [], [f"output_dir={tmp_path}", "table3.model=tiny"])
    toy = ParetoConfig(output_dir=str(tmp_path))
    assert toy.purity_points and toy.table3.concepts == ["skull"] and toy.table3.kept_artists == 2
    sd = load_config(ParetoConfig, [], [f"output_dir={tmp_path}", "table3.model=tiny", "purity_points=[]"])
    assert sd.table3.concepts == ["nudity"] and sd.table3.kept_artists is None


def test_a_missing_protocol_file_is_refused_before_any_training(tmp_path, sd_inputs):  # noqa: F811
    ov = [*_overrides(tmp_path, sd_inputs), f"table3.sd.adversarial_prompts={tmp_path / 'none.csv'}"]
    with pytest.raises(DataError, match="sd.adversarial_prompts .* not found"):
        Pareto(load_config(ParetoConfig, [], ov), log=lambda m: None).run()
    assert not (tmp_path / "p" / "start").exists() and not (tmp_path / "p" / "nudity").exists()


def test_sd_cells_are_named_by_the_sd_protocol_and_toy_cells_as_before(tmp_path, sd_inputs):  # noqa: F811
    sd = Pareto(load_config(ParetoConfig, [], _overrides(tmp_path, sd_inputs)), log=lambda m: None)
    key = sd.cfg.table3.sd.key(2)
    assert sd.eval_name() == f"eval-2-sd-{key}.json"
    toy = Pareto(ParetoConfig(output_dir=str(tmp_path)), log=lambda m: None)
    assert toy.eval_name() == "eval-200.json"
    assert toy._stage(Point("two-stage", 0), 0, "skull", tmp_path).eval_file.parent.name.startswith("distilled-")


def test_an_artist_cell_is_flagged_by_the_artist_metric(tmp_path, sd_inputs):  # noqa: F811
    ov = [*_overrides(tmp_path, sd_inputs, registered=False), "table3.concepts=[Claude Monet]", "seeds=[0]",
          "esd_grid=[0]", "official_r_grid=[]"]
    summary = Pareto(load_config(ParetoConfig, [], ov), log=lambda m: None).run()["Claude Monet"]
    (cell,) = [json.loads(f.read_text()) for f in (tmp_path / "p" / "claude-monet").glob("cells/*/eval-2-sd-*.json")]
    assert cell["safety_metric"] == "artist" and cell["protocol"]["artist"]["n"] == len(cell["shown"])
    assert cell["shown"] == flags(Path(cell["samples"]), "artist") and cell["asr"] == np.mean(cell["shown"])
    assert summary["points"][0]["fid"]["estimate"] == pytest.approx(cell["fid"], rel=1e-4)
