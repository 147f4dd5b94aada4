"""Model cards (README.md in the Hub's format) for every output folder, and `prunefit push` up to the upload call."""

from __future__ import annotations

import json

import pytest
import yaml

from prunefit.models.card import base_license, write_card


def _front(path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---", 4)])


@pytest.mark.parametrize("base, licence", [
    ("toyworld", "apache-2.0"), ("tiny", "apache-2.0"), ("runwayml/stable-diffusion-v1-5", "creativeml-openrail-m"),
    ("CompVis/stable-diffusion-v1-4", "creativeml-openrail-m"), ("stabilityai/stable-diffusion-2-1", "openrail++"),
    ("stabilityai/stable-diffusion-2-1-base", "openrail++"), ("someone/other-model", "other")])
def test_base_licence(base, licence):
    assert base_license(base) == licence


def test_a_local_base_folder_keeps_its_own_licence(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# x\n")
    assert base_license(str(tmp_path)) == "mit"


def _erase_run(root):
    """An erase run on a pruned expert, as the recipes leave it (plus an evaluation's results.json)."""
    (root / "expert").mkdir(parents=True)
    (root / "resolved_config.yaml").write_text(yaml.safe_dump({
        "model": "stabilityai/stable-diffusion-2-1", "output_dir": str(root), "seed": 3,
        "removal": {"method": "esd", "concepts": ["Van Gogh"]}, "esd": {"train_method": "xattn", "eta": 1.0},
        "uce": {"lam": 0.5}, "train": {"max_steps": 200, "lr": 1e-5, "compile": False}}))
    (root / "erase_summary.json").write_text(json.dumps({"method": "esd", "kind": "train", "concepts": ["Van Gogh"],
                                                         "steps": 200}))
    kept = {"down_blocks.0.resnets.0.width": 16, "down_blocks.1.resnets.1.depth": 0, "up_blocks.0.resnets.2.depth": 1}
    (root / "expert" / "expert.json").write_text(json.dumps({
        "format": "prunefit-expert/1", "source_model": "stabilityai/stable-diffusion-2-1", "kept": kept,
        "mac_ratio": 0.62, "mac_protocol": {"resolution": 768, "text_length": 77}, "expert_id": 1,
        "extra": {"method": "aptp", "target": 0.6}, "width_multiple": 8}))
    (root / "results.json").write_text(json.dumps({"model": str(root / "expert"), "n": 50, "metrics": {
        "clip": {"values": {"score": 30.123456}, "protocol": {"model": "ViT-L/14", "scale": 100}}}}))


def test_an_erase_run_gets_a_card_with_settings_and_metrics(tmp_path):
    _erase_run(tmp_path)
    card = write_card(tmp_path)
    front = _front(card)
    assert front["library_name"] == "diffusers" and front["license"] == "openrail++"
    assert front["base_model"] == "stabilityai/stable-diffusion-2-1"
    assert {"prunefit", "stable-diffusion", "pruned", "concept-erasure"} <= set(front["tags"])
    text = card.read_text()
    assert "Concepts: Van Gogh." in text and "MAC ratio 0.620" in text and "1 of 2 gated blocks removed" in text
    settings = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    assert settings["esd"] == {"train_method": "xattn", "eta": 1.0} and "uce" not in settings  # the method used only
    assert settings["train"] == {"max_steps": 200, "lr": 1e-5} and settings["summary"]["steps"] == 200
    assert "| clip | score 30.12 |" in text and '"model": "ViT-L/14"' in text  # the metric with its protocol


def test_the_prune_recipe_writes_a_card(tmp_path):
    from prunefit.config.load import load_config
    from prunefit.config.schema import PruneConfig
    from prunefit.recipes import prune

    cfg = load_config(PruneConfig, [], ["method=magnitude", "model=tiny", f"output_dir={tmp_path}", "target=0.7",
                                        "router.ffn_groups=8"])
    prune.main(cfg)
    front = _front(tmp_path / "README.md")
    assert front["base_model"] == "tiny" and "pruned" in front["tags"] and "concept-erasure" not in front["tags"]
    assert "method magnitude, target 0.7" in (tmp_path / "README.md").read_text()


def test_push_creates_the_repo_and_uploads_the_folder_with_its_card(tmp_path, monkeypatch, capsys):
    """Offline: HfApi is replaced by a recorder, so everything up to the upload call runs (the upload itself does
    not)."""
    import huggingface_hub

    from prunefit.cli import main

    calls = []

    class Recorder:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw["repo_id"], kw))
            assert (tmp_path / kw["folder_path"] / "README.md").is_file()  # the card goes up with the folder

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    _erase_run(tmp_path / "run")
    assert main(["push", str(tmp_path / "run"), "--repo-id", "me/erased", "--private"]) == 0
    assert [c[:2] for c in calls] == [("create_repo", "me/erased"), ("upload_folder", "me/erased")]
    assert calls[0][2] == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert calls[1][2]["folder_path"] == str(tmp_path / "run") and "checkpoints/*" in calls[1][2]["ignore_patterns"]
    assert "uploaded" in capsys.readouterr().out
    assert main(["push", str(tmp_path / "nope"), "--repo-id", "me/x"]) == 2
