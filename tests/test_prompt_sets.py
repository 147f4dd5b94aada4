"""Published prompt sets: conversion of local copies in each set's released column layout, the provenance sidecar,
the refusals (gated, offline, unknown name, existing output), and `attack` reading Ring-A-Bell / MMA files.

The fixtures copy the real sets' headers (from their sources; see prunefit.data.prompt_sets.SETS): I2P on the Hub
(AIML-TUDA/i2p), MMA-Diffusion's benchmark columns, Ring-A-Bell's released CSVs (prompt, case_number,
evaluation_seed) and its one-prompt-a-line copies, P4D's data/*.csv (a pandas index column first) and
UnlearnDiffAtk's prompts/nudity.csv. Nothing downloads: the Hub is replaced where a test needs it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from unittest import mock

import pytest

from prunefit.data.prompt_sets import SETS, prepare_prompt_set
from prunefit.data.prompts import read_prompt_file
from prunefit.errors import ConfigError, DataError, OutputError

I2P_HEADER = ["prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage", "q16_percentage",
              "sd_safety_percentage", "prompt_toxicity", "lexica_url", "sd_seed", "sd_guidance_scale",
              "sd_image_width", "sd_image_height", "sd_model"]
UDA_HEADER = ["Unnamed: 0", "prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage",
              "q16_percentage", "sd_safety_percentage", "prompt_toxicity", "lexica_url", "evaluation_seed",
              "evaluation_guidance", "sd_image_width", "sd_image_height", "sd_model", "case_number"]
MMA_HEADER = ["target_prompt", "adv_prompt", "sanitized_adv_prompt", "success_against_sanitization_defense",
              "clean_prompt"]


def _csv(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _i2p_row(prompt, categories, nudity, seed):
    return [prompt, categories, 1, 60.0, nudity, 10.0, 90.0, 0.2, "https://lexica.art/prompt/x", seed, 7, 512, 512,
            "stable-diffusion-v1-4"]


@pytest.fixture
def i2p(tmp_path):
    return _csv(tmp_path / "i2p_benchmark.csv", I2P_HEADER, [
        _i2p_row("a red house, oil painting", "shocking", 10.0, 123), _i2p_row("a figure, bath", "sexual", 80.0, 456),
        _i2p_row("a portrait, lingerie", "shocking, sexual", 40.0, 789)])


def test_i2p_converts_with_seed_and_guidance_and_a_provenance_sidecar(tmp_path, i2p):
    out = tmp_path / "sets" / "i2p.csv"
    res = prepare_prompt_set("i2p", out, source=i2p)
    assert res == {"prompts": out, "meta": tmp_path / "sets" / "i2p.csv.meta.json", "rows": 3}
    recs = read_prompt_file(out)  # the default format reads it
    assert [(r.id, r.prompt, r.seed) for r in recs] == [("0", "a red house, oil painting", 123),
                                                       ("1", "a figure, bath", 456), ("2", "a portrait, lingerie", 789)]
    assert recs[1].extra["categories"] == "sexual" and recs[1].extra["sd_guidance_scale"] == "7"
    meta = json.loads(res["meta"].read_text())
    assert meta["source"] == {"kind": "local", "path": str(i2p.resolve()), "files": [
        {"path": "i2p_benchmark.csv", "sha256": hashlib.sha256(i2p.read_bytes()).hexdigest()}]}
    assert meta["protocol"]["prompt_column"] == "prompt" and meta["protocol"]["seed_column"] == "sd_seed"
    assert meta["protocol"]["guidance_column"] == "sd_guidance_scale"
    assert meta["protocol"]["id_column"].startswith("row position")
    assert meta["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["output"]["prompt_format"] == "auto" and meta["output"]["rows"] == 3


def test_i2p_filters_are_applied_and_recorded(tmp_path, i2p):
    res = prepare_prompt_set("i2p", tmp_path / "nude.jsonl", source=i2p, category="sexual", min_nudity=50)
    assert [(r.id, r.seed) for r in read_prompt_file(res["prompts"])] == [("1", 456)]  # ids keep the source row
    proto = json.loads(res["meta"].read_text())["protocol"]
    assert proto["filters"] == {"category": "sexual", "min_nudity_percentage": 50}
    assert proto["rows_in_source"] == 3 and proto["rows_written"] == 1
    with pytest.raises(ConfigError, match="'categories' column"):
        prepare_prompt_set("mma-diffusion", tmp_path / "m.csv", source=_mma(tmp_path), category="sexual")


def _mma(tmp_path):
    return _csv(tmp_path / "mma.csv", MMA_HEADER, [
        ["a nude woman", "adv tokens one", "adv tokens", "True", "a dog on grass"],
        ["naked man", "adv tokens two", "adv tokens", "False", "a bowl of fruit"]])


def test_mma_takes_adv_prompt_and_keeps_the_other_columns(tmp_path):
    res = prepare_prompt_set("mma-diffusion", tmp_path / "mma_out.csv", source=_mma(tmp_path))
    recs = read_prompt_file(res["prompts"])
    assert [(r.id, r.prompt, r.seed) for r in recs] == [("0", "adv tokens one", None), ("1", "adv tokens two", None)]
    assert recs[0].extra["target_prompt"] == "a nude woman" and recs[0].extra["clean_prompt"] == "a dog on grass"
    alt = prepare_prompt_set("mma-diffusion", tmp_path / "san.csv", source=_mma(tmp_path),
                             prompt_column="sanitized_adv_prompt")
    assert json.loads(alt["meta"].read_text())["protocol"]["prompt_column"] == "sanitized_adv_prompt"
    with pytest.raises(DataError, match="no 'adv_prompt' column"):
        prepare_prompt_set("mma-diffusion", tmp_path / "x.csv", source=_csv(tmp_path / "p.csv", ["prompt"], [["a"]]))


def test_ring_a_bell_csv_and_headerless_copies(tmp_path):
    released = _csv(tmp_path / "rab.csv", ["prompt", "case_number", "evaluation_seed"],
                    [["nude tokens, one", 0, 41], ["bare tokens two", 1, 14]])
    recs = read_prompt_file(prepare_prompt_set("ring-a-bell", tmp_path / "a.csv", source=released)["prompts"])
    assert [(r.id, r.prompt, r.seed) for r in recs] == [("0", "nude tokens, one", 41), ("1", "bare tokens two", 14)]
    lines = tmp_path / "Nudity_ring-a-bell.csv"
    lines.write_text("nude tokens, one\nbare tokens two\n\n")
    recs = read_prompt_file(prepare_prompt_set("ring-a-bell", tmp_path / "b.csv", source=lines)["prompts"])
    assert [(r.id, r.prompt, r.seed) for r in recs] == [("0", "nude tokens, one", None), ("1", "bare tokens two", None)]


def test_p4d_and_unlearndiffatk_use_case_number_and_evaluation_seed(tmp_path):
    p4d = _csv(tmp_path / "unsafe-prompts-nudity_esd.csv", [""] + UDA_HEADER[1:], [
        [0, "falling, charcoal", "self-harm", 0, 40.0, 10.0, 40.0, 100.0, 0.1, "u", 1664501552, 17, 512, 512, "sd",
         20]])
    rec = read_prompt_file(prepare_prompt_set("p4d", tmp_path / "p4d.csv", source=p4d)["prompts"])[0]
    assert (rec.id, rec.seed, rec.extra["evaluation_guidance"]) == ("20", 1664501552, "17") and "" not in rec.extra
    folder = tmp_path / "uda"
    folder.mkdir()
    _csv(folder / "nudity.csv", UDA_HEADER, [
        [21, "a painting", "self-harm", 1, 60.0, 10.0, 60.0, 60.0, 0.04, "u", 932309623, 7, 512, 512, "sd", 21],
        [296, "a stomach", "shocking", 1, 70.0, 30.0, 50.0, 40.0, 0.26, "u", 2868251644, 7, 512, 512, "sd", 296]])
    (folder / "README.md").write_text("not data")
    res = prepare_prompt_set("unlearndiffatk", tmp_path / "uda.csv", source=folder)
    assert [(r.id, r.seed) for r in read_prompt_file(res["prompts"])] == [("21", 932309623), ("296", 2868251644)]
    assert "Unnamed: 0" not in read_prompt_file(res["prompts"])[0].extra
    meta = json.loads(res["meta"].read_text())
    assert [f["path"] for f in meta["source"]["files"]] == ["nudity.csv"]
    assert meta["protocol"]["id_column"] == "case_number" and meta["protocol"]["seed_column"] == "evaluation_seed"


def test_several_files_get_file_prefixed_ids(tmp_path):
    folder = tmp_path / "snap"
    folder.mkdir()
    for stem in ("esd", "sld max"):
        _csv(folder / f"{stem}.csv", ["prompt", "case_number", "evaluation_seed"], [[f"p {stem}", 7, 1]])
    recs = read_prompt_file(prepare_prompt_set("p4d", tmp_path / "all.csv", source=folder)["prompts"])
    assert [(r.id, r.extra["source_file"]) for r in recs] == [("esd-7", "esd.csv"), ("sld_max-7", "sld max.csv")]
    recs = read_prompt_file(prepare_prompt_set("p4d", tmp_path / "one.csv", source=folder, files="esd*")["prompts"])
    assert [r.id for r in recs] == ["7"]


def test_existing_output_is_refused_unless_forced(tmp_path, i2p):
    out = tmp_path / "i2p.csv"
    out.write_text("prompt\nmine\n")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        prepare_prompt_set("i2p", out, source=i2p)
    assert out.read_text() == "prompt\nmine\n" and not (tmp_path / "i2p.csv.meta.json").exists()
    prepare_prompt_set("i2p", out, source=i2p, force=True)
    assert len(read_prompt_file(out)) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporaries left


def test_bad_rows_leave_nothing_behind(tmp_path):
    bad = _csv(tmp_path / "dup.csv", ["prompt", "case_number"], [["a", 1], ["b", 1]])
    with pytest.raises(DataError, match="appears twice"):
        prepare_prompt_set("p4d", tmp_path / "out.csv", source=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.csv"]


@pytest.mark.parametrize("call, error, message", [
    (dict(name="coco"), ConfigError, "unknown prompt set 'coco'; available: i2p, mma-diffusion"),
    (dict(name="i2p", output="x.txt"), ConfigError, "give a .csv or .jsonl"),
    (dict(name="i2p", revision="main", source="x.csv"), ConfigError, "--revision selects a Hub revision"),
    (dict(name="i2p", source="missing.csv"), DataError, "no such file or folder"),
    (dict(name="i2p"), DataError, "HF_HUB_OFFLINE is set, so the i2p prompts cannot be downloaded; unset it, or "
                                  "convert a local copy with --from"),
    (dict(name="unlearndiffatk"), DataError, "HF_HUB_OFFLINE is set"),
])
def test_refusals(tmp_path, monkeypatch, call, error, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    call = {"output": "out.csv", **call}
    with pytest.raises(error, match=message.replace("(", r"\(")):
        prepare_prompt_set(**call)
    assert not (tmp_path / "out.csv").exists()


def test_cli_offline_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from prunefit.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "prompts", "mma-diffusion", "-o", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunefit: error: HF_HUB_OFFLINE is set") and "\n" not in err


def _hub_refusing(exc_type, message):
    from huggingface_hub import HfApi

    info = mock.Mock(sha="0" * 40)

    def snapshot(*args, **kwargs):
        raise exc_type(message, response=mock.Mock(status_code=401, headers={}))

    return mock.patch.object(HfApi, "dataset_info", return_value=info), \
        mock.patch("huggingface_hub.snapshot_download", snapshot)


@pytest.mark.parametrize("name, page, manual", [
    ("mma-diffusion", "https://huggingface.co/datasets/YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark", False),
    ("p4d", "https://huggingface.co/datasets/joycenerd/p4d", True)])
def test_gated_set_says_how_to_get_access(tmp_path, monkeypatch, name, page, manual):
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    info, snap = _hub_refusing(GatedRepoError, "401 Client Error: Cannot access gated repo")
    with info, snap, pytest.raises(DataError) as caught:
        prepare_prompt_set(name, tmp_path / "g.csv")
    msg = str(caught.value)
    assert "is gated" in msg and f"request access at {page}" in msg and "huggingface-cli login" in msg
    assert "--from FILE_OR_DIR" in msg and "\n" not in msg and ("by hand" in msg) == manual
    assert not list(tmp_path.iterdir())


def test_hub_download_records_the_resolved_revision(tmp_path, monkeypatch, i2p):
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = {}

    def snapshot(repo_id, repo_type, revision, local_dir, allow_patterns):
        calls.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        from pathlib import Path

        Path(local_dir, "i2p_benchmark.csv").write_bytes(i2p.read_bytes())
        Path(local_dir, ".cache").mkdir()
        Path(local_dir, ".cache", "junk.csv").write_text("not,data\n")

    sha = "6594f223b0544fcbf63a6889417a6b9d2e40a77c"
    with mock.patch.object(HfApi, "dataset_info", return_value=mock.Mock(sha=sha)), \
            mock.patch("huggingface_hub.snapshot_download", snapshot):
        res = prepare_prompt_set("i2p", tmp_path / "out" / "i2p.csv")
    assert calls == {"repo_id": "AIML-TUDA/i2p", "repo_type": "dataset", "revision": sha}
    src = json.loads(res["meta"].read_text())["source"]
    assert src["kind"] == "huggingface" and src["repo_id"] == "AIML-TUDA/i2p" and src["revision"] == sha
    assert [f["path"] for f in src["files"]] == ["i2p_benchmark.csv"] and res["rows"] == 3


def test_every_set_names_a_verified_source():
    assert set(SETS) == {"i2p", "mma-diffusion", "ring-a-bell", "p4d", "unlearndiffatk"}
    assert {s.name: s.repo_id for s in SETS.values() if s.repo_id} == {
        "i2p": "AIML-TUDA/i2p", "mma-diffusion": "YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark",
        "ring-a-bell": "Chia15/RingABell-Nudity", "p4d": "joycenerd/p4d"}
    assert SETS["unlearndiffatk"].page().startswith("https://github.com/OPTML-Group/Diffusion-MU-Attack/blob/")


# ---------------------------------------------------------------- attack reads every prompt format
def test_attack_reads_mma_and_ring_a_bell_files(tmp_path):
    from prunefit.config.load import load_config
    from prunefit.recipes.attack import AttackConfig, read_attack_prompts

    mma = _mma(tmp_path)
    cfg = load_config(AttackConfig, [], [f"prompts={mma}", "prompt_format=mma", "device=cpu"])
    prompts = read_attack_prompts(cfg)
    assert [(p.id, p.prompt) for p in prompts] == [("00000", "adv tokens one"), ("00001", "adv tokens two")]
    lines = tmp_path / "Nudity_ring-a-bell.csv"
    lines.write_text("nude tokens, one\nbare tokens two\n")
    cfg = load_config(AttackConfig, [], [f"prompts={lines}", "prompt_format=ring-a-bell", "device=cpu"])
    assert [p.prompt for p in read_attack_prompts(cfg)] == ["nude tokens, one", "bare tokens two"]
    released = _csv(tmp_path / "rab.csv", ["prompt", "case_number", "evaluation_seed"], [["tokens", 5, 41]])
    cfg = load_config(AttackConfig, [], [f"prompts={released}", "prompt_format=ring-a-bell", "device=cpu"])
    assert [(p.id, p.prompt, p.seed) for p in read_attack_prompts(cfg)] == [("5", "tokens", 41)]
    with pytest.raises(ConfigError, match="prompt_format must be one of auto, lines, ring-a-bell"):
        load_config(AttackConfig, [], ["prompt_format=mmaa", "device=cpu"])


def test_attack_none_runs_on_an_mma_file_and_records_the_format(tmp_path):
    from prunefit.config.load import load_config
    from prunefit.recipes.attack import AttackConfig, main

    res = main(load_config(AttackConfig, [], [
        f"prompts={_mma(tmp_path)}", "prompt_format=mma", "attack=none", "concept=skull", "n_prompts=1",
        f"output_dir={tmp_path / 'run'}", "sampler.steps=2", "chunk_size=1", "device=cpu"]))
    assert res.n == 1 and res.protocol["prompt_format"] == "mma"
    rows = [json.loads(x) for x in (tmp_path / "run" / "pre.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "adv tokens one"


def test_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with mock.patch.object(HfApi, "dataset_info", side_effect=OSError("Name or service not known")), \
            pytest.raises(DataError, match="cannot download AIML-TUDA/i2p .*Name or service not known.*--from"):
        prepare_prompt_set("i2p", tmp_path / "i2p.csv")


def test_unlearndiffatk_from_github_is_checked_against_its_sha256(tmp_path, monkeypatch):
    import io
    import urllib.error

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, commit, path, sha = SETS["unlearndiffatk"].github
    body = b"prompt,evaluation_seed,case_number\na painting,932309623,21\n"
    opened = []

    def urlopen(url, timeout):
        opened.append(url)
        return io.BytesIO(body)

    with mock.patch("urllib.request.urlopen", urlopen), pytest.raises(DataError, match="expected sha256"):
        prepare_prompt_set("unlearndiffatk", tmp_path / "uda.csv")
    assert opened == [f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"] and not list(tmp_path.iterdir())
    pinned = dataclasses.replace(SETS["unlearndiffatk"], github=(repo, commit, path, hashlib.sha256(body).hexdigest()))
    with mock.patch.dict(SETS, {"unlearndiffatk": pinned}), mock.patch("urllib.request.urlopen", urlopen):
        res = prepare_prompt_set("unlearndiffatk", tmp_path / "uda.csv")
    src = json.loads(res["meta"].read_text())["source"]
    assert src["kind"] == "github" and src["commit"] == commit and src["files"][0]["sha256"] == \
        hashlib.sha256(body).hexdigest()
    assert [(r.id, r.seed) for r in read_prompt_file(res["prompts"])] == [("21", 932309623)]
    with mock.patch("urllib.request.urlopen", side_effect=urllib.error.URLError("no route")), \
            pytest.raises(DataError, match="no route.*--from FILE"):
        prepare_prompt_set("unlearndiffatk", tmp_path / "other.csv")
