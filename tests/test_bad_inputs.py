"""The bad-input matrix: every case goes through ``prunefit.cli.main``, returns 2, prints one line on stderr and
leaves the file system exactly as it was (no output folder created, nothing overwritten)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from prunefit.cli import main

WRITERS = ("generate", "finetune", "prune", "erase", "bilevel")
EXPERT_FIELDS = {"format": "prunefit-expert/1", "source_model": "tiny", "base_config": {}, "arch": [1.0],
                 "ffn_groups": 8, "kept": {}, "mac_ratio": 1.0, "mac_protocol": {}}


# ------------------------------------------------------------------------------------------ bad files
def _file(tmp: Path, name: str, data: str | bytes) -> str:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(p)


def _tiny_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.zeros(1)})


def _run_dir(tmp: Path, name: str, truncate: bool = False, model: str = "tiny") -> Path:
    run = tmp / name
    (run / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(run / "images" / "a.png")
    if truncate:
        data = (run / "images" / "a.png").read_bytes()
        (run / "images" / "a.png").write_bytes(data[: len(data) // 2])
    (run / "manifest.jsonl").write_text(json.dumps({"id": "a", "prompt": "x", "model": model,
                                                    "settings": {"steps": 2}}) + "\n")
    return run


def _fixtures(tmp: Path) -> dict[str, str]:
    f = {"tmp": str(tmp), "out": str(tmp / "out")}
    f["bad_yaml"] = _file(tmp, "bad.yaml", "train: [unclosed\n")
    f["list_yaml"] = _file(tmp, "list.yaml", "- a\n- b\n")
    f["not_sd"] = str(Path(_file(tmp, "notsd/model_index.json", json.dumps({"_class_name": "X", "unet": ["a", "b"]}))
                           ).parent)
    f["bad_index"] = str(Path(_file(tmp, "badindex/model_index.json", "{nope")).parent)
    f["empty_dir"] = str(tmp / "emptydir")
    (tmp / "emptydir").mkdir()
    f["corrupt_expert"] = str(Path(_file(tmp, "ce/expert.json", "{broken")).parent)
    text = json.dumps(EXPERT_FIELDS)
    f["truncated_expert"] = str(Path(_file(tmp, "te/expert.json", text[: len(text) // 2])).parent)
    f["other_format_expert"] = str(Path(_file(tmp, "ofe/expert.json", json.dumps({**EXPERT_FIELDS, "format": "x/9"})
                                              )).parent)
    _file(tmp, "bh/expert.json", text)
    _file(tmp, "bh/unet.safetensors", (10**9).to_bytes(8, "little") + b'{"a": garbage')
    f["bad_header_expert"] = str(tmp / "bh")
    f["no_weights_expert"] = str(Path(_file(tmp, "nw/expert.json", text)).parent)
    _file(tmp, "ob/expert.json", json.dumps({**EXPERT_FIELDS, "base_config": {"in_channels": 9}}))
    _file(tmp, "ob/unet.safetensors", _tiny_safetensors())
    f["other_base_expert"] = str(tmp / "ob")
    f["empty_prompts"] = _file(tmp, "empty.txt", "\n\n")
    f["binary_prompts"] = _file(tmp, "binary.txt", b"\xff\xfe\x00\x81garbage")
    f["no_prompt_column"] = _file(tmp, "nocol.csv", "\ufefftext,seed\r\nhello,1\r\n")
    f["dup_ids"] = _file(tmp, "dup.csv", "id,prompt\na,x\na,y\n")
    f["bad_jsonl"] = _file(tmp, "p.jsonl", '{"prompt": "x"}\nnot json\n')
    f["truncated_run"] = str(_run_dir(tmp, "trun", truncate=True))
    run = _run_dir(tmp, "okrun")
    f["run"] = str(run)
    other = _run_dir(tmp, "otherrun")
    (other / "results.json").write_text(json.dumps({"model": "toyworld", "n": 1, "metrics": {}}))
    f["results_other_run"] = str(other)
    f["results_not_json"] = _file(tmp, "rnj/results.json", "{half")
    f["results_list"] = _file(tmp, "rl/results.json", "[]")
    missing = tmp / "missing"
    missing.mkdir()
    (missing / "manifest.jsonl").write_text((run / "manifest.jsonl").read_text())
    f["missing_images_run"] = str(missing)
    _file(tmp, "cache_other/cache.safetensors", b"x")
    _file(tmp, "cache_other/cache.json", json.dumps({"n": 1, "captions": ["x"], "model": "toyworld"}))
    f["cache_other_model"] = str(tmp / "cache_other")
    _file(tmp, "cache_bad/cache.safetensors", b"x")
    _file(tmp, "cache_bad/cache.json", '{"n": 1, "capt')
    f["cache_corrupt"] = str(tmp / "cache_bad")
    (tmp / "norouter" / "experts" / "expert-0").mkdir(parents=True)
    f["no_router"] = str(tmp / "norouter")
    live = tmp / "locked"
    live.mkdir()
    (live / ".prunefit.lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename,
                                                     "started": 0, "command": "prunefit generate"}))
    f["locked"] = str(live)
    f["foreign_lock"] = str(tmp / "foreign")
    _file(tmp, "foreign/.prunefit.lock", json.dumps({"pid": 1, "host": "another-host", "started": 0}))
    return f


CASES = [  # (arguments with {fixture} fields, expected message fragment)
    # config files and keys
    (["generate", "--config", "{bad_yaml}", "-p", "x"], "malformed YAML"),
    (["generate", "--config", "{list_yaml}", "-p", "x"], "must hold a mapping"),
    (["generate", "--config", "/nonexistent.yaml"], "config file not found"),
    (["generate", "-p", "x", "modle=tiny"], "unknown config key 'modle'"),
    (["generate", "-p", "x", "model=tiny", "sampler.stepz=5"], "unknown config key 'sampler.stepz'"),
    (["finetune", "train.max_stepz=3"], "unknown config key 'train.max_stepz'"),
    (["generate", "-p", "x", "sampler.steps=ten"], "wrong type for key 'sampler.steps'"),
    # values out of range
    (["finetune", "train.lr=-0.1"], "train.lr must be > 0"),
    (["finetune", "train.max_steps=0"], "train.max_steps must be >= 1"),
    (["finetune", "train.mixed_precision=fp8"], "train.mixed_precision must be auto, no, fp16 or bf16"),
    (["bilevel", "lam=0"], "lam must be > 0"),
    (["bilevel", "upper_method=concept_prune"], "must be a train method"),
    (["bilevel", "model=tiny", "concepts=[x]", "esd.retain_weight=1"], "needs esd.retain_prompts"),
    (["generate", "-p", "x", "model=tiny", "sampler.steps=0"], "sampler.steps must be >= 1"),
    (["generate", "-p", "x", "model=tiny", "sampler.steps=-5"], "sampler.steps must be >= 1"),
    (["generate", "-p", "x", "model=tiny", "sampler.scheduler=warp"], "unknown scheduler 'warp'"),
    (["generate", "-p", "x", "model=tiny", "sampler.guidance_scale=-1"], "guidance_scale must be >= 0"),
    (["prune", "method=lottery"], "unknown pruning method 'lottery'"),
    (["prune", "target=1.5"], "target must be in (0, 1]"),
    (["erase", "--method", "esdx", "removal.concepts=[x]", "model=tiny"], "unknown removal method 'esdx'"),
    (["erase", "--method", "uce", "model=tiny"], "no concepts to remove"),
    (["erase", "--method", "esd", "removal.concepts=[Claude Dots]", "esd.train_method=everything"],
     "esd.train_method must be"),
    (["erase", "--method", "concept_prune", "removal.concepts=[Claude Dots]", "concept_prune.union_steps=99"],
     "union_steps must be in"),
    (["erase", "--method", "esd", "removal.concepts=[x]"], "concept 'x' is not one this model knows"),
    (["erase", "--method", "uce", "removal.concepts=[skull]", "removal.concept_kind=style"],
     "is of kind unsafe on this model, not style"),
    (["erase", "--method", "uce", "removal.concepts=[x]", "model=tiny", "removal.concept_kind=thing"],
     "removal.concept_kind must be one of"),
    (["evaluate", "{run}", "-m", "clip_score", "clip_score.clamp=zero"], "clip_score.clamp must be"),
    # models, students, experts
    (["generate", "-p", "x", "model=/nonexistent/folder"], "model folder not found"),
    (["generate", "-p", "x", "model=someone/some-model"], "HF_HUB_OFFLINE is set"),
    (["generate", "-p", "x", "model={not_sd}"], "not a Stable Diffusion pipeline"),
    (["generate", "-p", "x", "model={empty_dir}"], "not a diffusers pipeline folder"),
    (["generate", "-p", "x", "model={bad_index}"], "is not valid JSON"),
    (["generate", "-p", "x", "model=tiny", "--expert", "{empty_dir}"], "is not an expert folder"),
    (["generate", "-p", "x", "model=tiny", "expert={corrupt_expert}"], "corrupt"),
    (["generate", "-p", "x", "model=tiny", "expert={truncated_expert}"], "corrupt"),
    (["generate", "-p", "x", "model=tiny", "expert={other_format_expert}"], "not a prunefit-expert/1 file"),
    (["generate", "-p", "x", "model=tiny", "expert={bad_header_expert}"], "the file is corrupt"),
    (["generate", "-p", "x", "model=tiny", "expert={no_weights_expert}"], "unet.safetensors is missing"),
    (["generate", "-p", "x", "expert={other_base_expert}"], "was pruned from another base model"),
    (["erase", "--method", "uce", "removal.concepts=[Claude Dots]", "student={other_base_expert}"],
     "was pruned from another base model"),
    (["generate", "-p", "x", "--experts", "/nonexistent/prune"], "experts folder not found"),
    (["generate", "-p", "x", "--experts", "{no_router}"], "has no router/"),
    (["erase", "--method", "uce", "removal.concepts=[x]", "model=tiny", "student=/nonexistent/expert"],
     "student folder not found"),
    (["erase", "--method", "uce", "removal.concepts=[x]", "model=tiny", "student={bad_header_expert}"],
     "the file is corrupt"),
    (["erase", "--method", "uce", "removal.concepts=[x]", "model=/nonexistent"], "model folder not found"),
    (["finetune", "model=tiny", "student={corrupt_expert}", "train.max_steps=1"], "corrupt"),
    (["finetune", "model=tiny", "student={truncated_expert}"], "corrupt"),
    (["finetune", "model=/nonexistent"], "model folder not found"),
    (["bilevel", "model=tiny", "student=/nonexistent/expert"], "student folder not found"),
    (["prune", "model=/nonexistent"], "model folder not found"),
    # caches
    (["finetune", "model=tiny", "cache_dir={cache_other_model}"], "was made with model 'toyworld', not 'tiny'"),
    (["finetune", "model=tiny", "cache_dir={cache_corrupt}"], "cache.json is missing or corrupt"),
    (["finetune", "model=tiny", "cache_dir={empty_dir}"], "no latent cache"),
    (["bilevel", "model=tiny", "cache_dir={cache_other_model}"], "was made with model 'toyworld'"),
    # prompt files
    (["generate", "--prompt-file", "/nonexistent/prompts.txt", "model=tiny"], "prompt file not found"),
    (["generate", "--prompt-file", "{empty_prompts}", "model=tiny"], "holds no prompts"),
    (["generate", "--prompt-file", "{binary_prompts}", "model=tiny"], "not UTF-8"),
    (["generate", "--prompt-file", "{no_prompt_column}", "model=tiny"], "needs a 'prompt' column"),
    (["generate", "--prompt-file", "{dup_ids}", "model=tiny"], "appears twice"),
    (["generate", "--prompt-file", "{bad_jsonl}", "model=tiny"], "line 2 is not valid JSON"),
    (["generate", "model=tiny"], "no prompts"),
    (["generate", "-p", "x", "--prompt-file", "{empty_prompts}", "model=tiny"], "not both"),
    (["route", "--experts", "{tmp}", "--prompt-file", "/nonexistent.txt", "-o", "{tmp}/r.jsonl"],
     "prompt file not found"),
    # output folders
    (["generate", "-p", "x", "model=tiny", "-o", "/dev/null/out"], "cannot write to output folder"),
    (["erase", "--method", "uce", "removal.concepts=[x]", "model=tiny", "output_dir=/dev/null/x"],
     "cannot write to output folder"),
    (["generate", "-p", "x", "model=tiny", "-o", "{locked}"], "is in use by pid"),
    (["finetune", "model=tiny", "output_dir={locked}"], "is in use by pid"),
    (["generate", "-p", "x", "model=tiny", "-o", "{foreign_lock}"], "on another-host"),
    # evaluation inputs and results files
    (["evaluate", "{truncated_run}", "-m", "toyworld"], "cannot read image"),
    (["evaluate", "{run}", "-m", "fidd"], "unknown metric 'fidd'"),
    (["evaluate", "{empty_dir}", "-m", "macs"], "no manifest.jsonl"),
    (["evaluate", "{missing_images_run}", "-m", "toyworld"], "is missing"),
    (["evaluate", "{run}", "-m", "clip_score", "clip_score.model=/nonexistent/clip"], "cannot load CLIP model"),
    (["evaluate", "{run}", "-m", "fid"], "fid needs fid.reference_images"),
    (["evaluate", "fid-ref"], "fid-ref needs --images"),
    (["evaluate", "{results_other_run}", "-m", "toyworld"], "holds results of another run"),
    (["evaluate", "{run}", "-m", "toyworld", "-o", "{results_not_json}"], "is not valid JSON"),
    (["evaluate", "{run}", "-m", "toyworld", "-o", "{results_list}"], "is not a prunefit results file"),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args, message", CASES, ids=[f"{i:02d}-{a[0]}-{m[:28]}" for i, (a, m) in enumerate(CASES)])
def test_bad_input(args, message, tmp_path, capsys):
    fills = _fixtures(tmp_path)
    argv = [a.format(**fills) for a in args]
    if argv[0] in WRITERS and not any(a.startswith("output_dir=") or a in ("-o", "--output") for a in argv):
        argv.append(f"output_dir={fills['out']}")
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert _snapshot(tmp_path) == before  # no output path created, nothing overwritten


def test_matrix_is_large_enough():
    assert len(CASES) >= 40


def test_missing_nudenet_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nudenet", None)  # NudeNet not installed
    run = _run_dir(tmp_path, "run")
    before = _snapshot(tmp_path)
    assert main(["evaluate", str(run), "-m", "nudity_asr"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NudeNet is not installed" in err
    assert _snapshot(tmp_path) == before


def test_error_overwrites_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["generate", "-p", "x", "-o", str(out), "model=tiny", "sampler.steps=2"]) == 0
    snapshot = _snapshot(out)
    assert main(["generate", "-p", "x", "-o", str(out), "model=tiny", "sampler.steps=3"]) == 2
    assert "use a new output_dir" in capsys.readouterr().err
    assert _snapshot(out) == snapshot and not (out / ".prunefit.lock").exists()


def test_prompt_csv_with_bom_and_crlf_is_read(tmp_path, capsys):
    from prunefit.data.prompts import read_prompt_file

    f = Path(_file(tmp_path, "p.csv", b'\xef\xbb\xbfid,prompt,seed\r\na,a red circle,3\r\nb,"a blue, square",4\r\n'))
    recs = read_prompt_file(f)
    assert [(r.id, r.prompt, r.seed) for r in recs] == [("a", "a red circle", 3), ("b", "a blue, square", 4)]
    txt = Path(_file(tmp_path, "p.txt", b"\xef\xbb\xbfa red circle\r\na blue square\r\n"))
    assert [r.prompt for r in read_prompt_file(txt)] == ["a red circle", "a blue square"]
    out = tmp_path / "gen"
    assert main(["generate", "--prompt-file", str(f), "-o", str(out), "model=tiny", "sampler.steps=1"]) == 0
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red circle", "a blue, square"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.png"]


def test_a_failed_run_removes_only_the_empty_folders_it_made(tmp_path, capsys):
    """An error inside the run (after the lock made the folder) leaves nothing behind; a folder that existed
    before stays."""
    out = tmp_path / "deep" / "er" / "out"
    bad = _fixtures(tmp_path)["other_format_expert"]
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    # the expert's base config does not match tiny's UNet: found only after the model loads, inside the lock
    info = json.loads(Path(bad, "expert.json").read_text())
    Path(bad, "expert.json").write_text(json.dumps({**info, "format": "prunefit-expert/1"}))
    Path(bad, "unet.safetensors").write_bytes((tmp_path / "bh" / "unet.safetensors").read_bytes())
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(Path(bad, "unet.safetensors")))
    assert main(["generate", "-p", "x", "model=tiny", f"expert={bad}", "-o", str(out)]) == 2
    assert "another base model" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_results_measured_with_another_protocol_are_kept(tmp_path, capsys):
    run = _run_dir(tmp_path, "run")
    assert main(["evaluate", str(run), "-m", "toyworld"]) == 0
    doc = json.loads((run / "results.json").read_text())
    doc["metrics"]["toyworld"]["protocol"]["judge"] = "another judge"
    (run / "results.json").write_text(json.dumps(doc))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run), "-m", "toyworld"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds 'toyworld' measured with another protocol" in err
    assert _snapshot(tmp_path) == before
