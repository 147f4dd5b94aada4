"""`prunefit export`: an expert as a pipeline folder plain diffusers loads, with the same outputs, without prunefit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import pytest
import torch

from prunefit.errors import ModelLoadError
from prunefit.models.components import load_components, make_pipeline
from prunefit.pruning.expert import expert_info, load_expert, save_expert
from prunefit.pruning.export import export_folder
from prunefit.pruning.materialize import materialize
from prunefit.pruning.spec import gate_spec


@pytest.fixture(scope="module")
def toy():
    return load_components("toyworld")


@pytest.fixture(scope="module")
def exported(toy, tmp_path_factory):
    """A random toy-teacher expert (some heads, channels, FFN groups and two whole blocks removed) and its export."""
    root = tmp_path_factory.mktemp("export")
    spec = gate_spec(toy.unet, ffn_groups=8)
    g = torch.Generator().manual_seed(0)
    arch = (torch.rand(spec.dim, generator=g) < 0.6).float()
    widths, depth = spec.split(arch.unsqueeze(0))
    for w in widths:
        w[0, 0] = 1.0
    depth[0] = 1.0
    depth[0, :2] = 0.0  # remove two blocks: the export must rebuild the skips
    arch = spec.join(widths, depth)[0]
    unet = load_components("toyworld").unet
    kept = materialize(unet, spec, arch)
    info = expert_info(toy.unet, spec, arch, "toyworld", kept, 0.5, {"resolution": 32}, extra={"method": "random"})
    expert = save_expert(unet, info, root / "expert")
    return expert, export_folder(expert, root / "out")[0]


def test_exported_unet_equals_load_expert(exported):
    from prunefit.pruning.pruned_unet import PrunedUNet2DConditionModel

    expert, out = exported
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["pruned_unet", "PrunedUNet2DConditionModel"]
    layers = json.loads((out / "unet" / "config.json").read_text())["pruned_layers"]
    assert sum(e["kind"].startswith("skip") for e in layers.values()) == 2
    ours, _ = load_expert(expert)
    theirs = PrunedUNet2DConditionModel.from_pretrained(out / "unet").eval()
    g = torch.Generator().manual_seed(1)
    x, t, c = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 700]), torch.randn(2, 6, 64, generator=g)
    with torch.no_grad():
        a, b = ours(x, t, c).sample, theirs(x, t, c).sample
    assert a.abs().mean() > 0.01 and torch.allclose(a, b, atol=1e-5)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "trust_remote_code=True" in card and "pruned" in card


_CHILD = """
import importlib.util, sys
sys.path.append(sys.argv[1])  # the venv's site-packages, read without its .pth files (-S): no editable prunefit
assert importlib.util.find_spec("prunefit") is None, "prunefit is importable"
try:
    import prunefit  # noqa: F401
    sys.exit("import prunefit worked")
except ImportError:
    pass
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[2], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
img = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
           output_type="np").images
np.save(sys.argv[3], img)
print(type(pipe).__name__, type(pipe.unet).__name__, sorted(m.split(".")[0] for m in sys.modules if "prunefit" in m))
"""


@pytest.mark.slow
def test_exported_folder_samples_without_prunefit(exported, toy, tmp_path):
    """A child python without prunefit (``-I``: no PYTHONPATH, no cwd; ``-S``: site-packages added by hand, so the
    editable install's .pth never puts src/ on the path) loads the folder and samples 2 steps; same images as ours."""
    import numpy as np

    expert, out = exported
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD, sysconfig.get_paths()["purelib"], str(out),
                          str(tmp_path / "img.npy")], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["StableDiffusionPipeline", "PrunedUNet2DConditionModel"] + ["[]"]
    unet, _ = load_expert(expert)
    pipe = make_pipeline(toy.with_unet(unet))
    ours = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                output_type="np").images
    assert np.abs(np.load(tmp_path / "img.npy") - ours).max() < 1e-4


def test_export_cli_on_a_prune_run_and_bad_input(exported, tmp_path, capsys):
    import shutil

    from prunefit.cli import main

    expert, _ = exported
    for k in (0, 1):
        shutil.copytree(expert, tmp_path / "run" / "experts" / f"expert-{k}")
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert all(f"pipeline: {tmp_path / 'out' / f'expert-{k}'}" in printed for k in (0, 1))
    assert (tmp_path / "out" / "expert-1" / "unet" / "pruned_unet.py").is_file()
    with pytest.raises(ModelLoadError, match="holds no expert"):
        export_folder(tmp_path, tmp_path / "x")
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "o2"), "--base", "tiny"]) == 2
    assert "not the model expert" in capsys.readouterr().err
