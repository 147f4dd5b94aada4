"""``pruning.resolve``: one answer to "which model does this path name", a row per kind, on tmp folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from prunefit.errors import ConfigError, ModelLoadError
from prunefit.pruning.resolve import ModelRef, load_student, model_components, resolve_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One folder of every kind: a pipeline, an expert of tiny, a prune output, rows (row.json, expert/,
    pipeline/), and an existing folder that holds no model."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import expert_info, save_expert
    from prunefit.pruning.materialize import materialize
    from prunefit.pruning.spec import gate_spec

    root = tmp_path_factory.mktemp("resolve")
    base = load_components("tiny").unet
    spec = gate_spec(base, 8)
    arch = torch.ones(spec.dim)
    arch[: spec.width[0].size // 2] = 0
    unet = copy.deepcopy(base)
    kept = materialize(unet, spec, arch)
    expert = save_expert(unet, expert_info(base, spec, arch, "tiny", kept, 0.9, {}), root / "expert")
    pipe = root / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text("{}")
    prune = root / "prune"
    (prune / "router").mkdir(parents=True)
    (prune / "router" / "router.json").write_text(json.dumps({"source_model": "tiny"}))
    save_expert(unet, expert_info(base, spec, arch, "tiny", kept, 0.9, {}), prune / "experts" / "expert-0")
    row = root / "row"
    row.mkdir()
    (row / "row.json").write_text(json.dumps({"model": str(expert), "fjd": 1.0}))
    row_expert = root / "row_expert"
    save_expert(unet, expert_info(base, spec, arch, "tiny", kept, 0.9, {}), row_expert / "expert")
    row_pipe = root / "row_pipe"
    (row_pipe / "pipeline").mkdir(parents=True)
    (row_pipe / "pipeline" / "model_index.json").write_text("{}")
    (root / "empty").mkdir()
    return {"expert": expert, "pipe": pipe, "prune": prune, "row": row, "row_expert": row_expert,
            "row_pipe": row_pipe, "empty": root / "empty", "root": root}


# (path, base given, kind, base, expert, prune_dir, row, loads); "{x}" = folders[x]
TABLE = [
    ("toyworld", None, "dense", "toyworld", None, None, None, "dense"),
    ("tiny", "toyworld", "dense", "tiny", None, None, None, "dense"),
    ("someone/some-model", None, "dense", "someone/some-model", None, None, None, "dense"),
    ("{pipe}", None, "dense", "{pipe}", None, None, None, "dense"),
    ("{expert}", None, "expert", "tiny", "{expert}", None, None, "expert"),
    ("{expert}", "other-base", "expert", "other-base", "{expert}", None, None, "expert"),
    ("{prune}", None, "routed", "tiny", None, "{prune}", None, "routed"),
    ("{row}", None, "row", "tiny", "{expert}", None, "{row}", "expert"),
    ("{row_expert}", None, "row", "tiny", "{row_expert}/expert", None, "{row_expert}", "expert"),
    ("{row_pipe}", "tiny", "row", "{row_pipe}/pipeline", None, None, "{row_pipe}", "dense"),
]


@pytest.mark.parametrize("path,base,kind,want_base,expert,prune_dir,row,loads", TABLE)
def test_resolve_model_table(folders, path, base, kind, want_base, expert, prune_dir, row, loads):
    def fill(s):
        return None if s is None else s.format(**{k: str(v) for k, v in folders.items()})

    ref = resolve_model(fill(path), base)
    assert ref == ModelRef(kind, fill(path), fill(want_base), expert=fill(expert), prune_dir=fill(prune_dir),
                           row=fill(row))
    assert ref.loads == loads


def test_a_folder_without_a_model_fails_with_one_teaching_line(folders):
    with pytest.raises(ModelLoadError) as exc:
        resolve_model(folders["empty"])
    msg = str(exc.value)
    assert "\n" not in msg and str(folders["empty"]) in msg
    assert "holds no model_index.json, expert.json, router/ or row.json" in msg and "experiment row" in msg
    bad_row = folders["root"] / "bad_row"
    bad_row.mkdir(exist_ok=True)
    (bad_row / "row.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="names no model"):
        resolve_model(bad_row)


def test_routed_experts_are_not_one_model(folders):
    with pytest.raises(ConfigError, match="holds routed experts.*expert-0"):
        model_components(resolve_model(folders["prune"]))


def test_loading_what_it_resolved(folders, tiny):
    """A dense model loads itself; an expert or a row holding one loads the expert's UNet over its base."""
    dense = model_components(resolve_model("tiny"))
    assert dense.unet.config == tiny.unet.config and dense.source == "tiny"
    expert = model_components(resolve_model(folders["row"]))
    full = sum(p.numel() for p in dense.unet.parameters())
    assert sum(p.numel() for p in expert.unet.parameters()) < full
    assert expert.text_encoder is not None and expert.source == "tiny"
    over = model_components(resolve_model(folders["expert"]), base_components=dense, source="mine")
    assert over.vae is dense.vae and over.source == "mine"
    student, info = load_student(str(folders["expert"]), dense)
    assert info.source_model == "tiny" and sum(p.numel() for p in student.parameters()) < full
    twin, none = load_student(None, dense)
    assert none is None and twin is not dense.unet and sum(p.numel() for p in twin.parameters()) == full
