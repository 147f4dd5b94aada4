"""FID conventions (fid.mode): our legacy_pytorch pinned to clean-fid 0.1.35 + torch-fidelity 0.4.0 run from their
wheels (tests/fid_reference_run.py, in a process of its own), weights handling, and the protocol in results.json
and in cached reference statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunefit.errors import ConfigError, ModelLoadError
from prunefit.evaluation import fid as fidlib
from prunefit.evaluation import fid_inception as fi
from prunefit.evaluation.configs import FidConfig

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".venv" / "refwheels"
NEEDED = ("torch_fidelity-0.4.0-py3-none-any.whl", "clean_fid-0.1.35-py3-none-any.whl")


def _images(folder: Path, sizes: list[tuple[int, int]], seed: int, suffix: str = ".png") -> list[Path]:
    """Blocky random RGB images (8x8 noise upsampled) of the given (width, height)s."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i, (w, h) in enumerate(sizes):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        out.append(folder / f"{i:03d}{suffix}")
        small.resize((w, h), Image.NEAREST).save(out[-1])
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """A random state with every tensor kind perturbed (BN statistics and affines too), so that a key mix-up
    between the implementations would show; saved where pytorch-fid / clean-fid look (torch hub cache)."""
    g = torch.Generator().manual_seed(1)
    state = fi.random_state_dict(0)
    for k, v in state.items():
        if k.endswith(("running_var", "bn.weight")):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bn.bias")):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def _run_reference(tmp: Path, full_fid: bool = False) -> tuple[dict, dict]:
    """Our legacy_pytorch pieces and the references', on the same images and the same random weights."""
    missing = [n for n in NEEDED if not (WHEELS / n).is_file()]
    if missing:
        pytest.skip(f"reference wheels {missing} not in {WHEELS}; run `make venv` (it downloads them)")
    n = 12 if full_fid else 2
    gen = _images(tmp / "gen", [(64, 64)] * n, 0)
    ref = _images(tmp / "ref", [(80, 60), (48, 72), (300, 298)] * max(1, n // 3), 1, ".jpg")
    square = _images(tmp / "square", [(299, 299)], 2)
    hub = tmp / "torch_home" / "hub"
    weights = hub / "checkpoints" / fi.WEIGHTS_FILE
    _weights(weights)
    g = torch.Generator().manual_seed(3)
    synth = {"a0": torch.randn(300, 24, generator=g), "b0": 0.5 + 1.3 * torch.randn(300, 24, generator=g),
             "a1": torch.randn(10, 24, generator=g), "b1": torch.randn(12, 24, generator=g)}  # rank-deficient
    np.savez(tmp / "synth.npz", **{k: v.numpy() for k, v in synth.items()})
    env = {**os.environ, "TORCH_HOME": str(hub.parent), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).with_name("fid_reference_run.py")), str(WHEELS), str(tmp / "ref.npz"),
           str(tmp / "gen"), str(tmp / "ref"), str(tmp / "square"), str(tmp / "synth.npz")]
    proc = subprocess.run(cmd + (["--full-fid"] if full_fid else []), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = dict(np.load(tmp / "ref.npz"))

    net = fidlib.legacy_inception_features(str(weights))
    ours = {"feats_gen": fidlib.batched_features(gen, net, 4), "feats_ref": fidlib.batched_features(ref, net, 4),
            "resized": fi.legacy_pytorch_resize(fidlib.load_image(ref[0])).permute(1, 2, 0).numpy(), "net": net}
    trunk, _ = fi.load_fid_inception(str(weights))
    sq = torch.stack([torch.from_numpy(fidlib.load_image(p)).permute(2, 0, 1) for p in square]).float()
    with torch.no_grad():  # torch-fidelity normalizes (x - 128) / 128; feed our trunk the same
        ours["feats_tf"] = trunk((sq - 128) / 128).double()
    for i in range(2):
        stats = *fidlib.feature_stats(synth[f"a{i}"]), *fidlib.feature_stats(synth[f"b{i}"])
        try:
            ours[f"fid_synth{i}"] = fidlib.frechet_distance_legacy(*stats)
        except Exception:
            ours[f"fid_synth{i}"] = float("nan")
    return ours, theirs


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_legacy_pytorch_matches_cleanfid_and_torch_fidelity(tmp_path):
    ours, theirs = _run_reference(tmp_path)
    assert "clean_fid-0.1.35-py3-none-any.whl" in str(theirs["cleanfid_from"])
    # clean-fid's legacy_pytorch resize (float bilinear to 299, align_corners=False, clipped, not quantized)
    assert theirs["resized"].dtype == np.float32 and theirs["resized"].shape == (299, 299, 3)
    assert _rel(ours["resized"], theirs["resized"]) < 1e-6
    # clean-fid's whole feature pipeline (its pytorch-fid InceptionV3 + FIDInception blocks, weights from the hub
    # cache) on 64 px PNGs and JPEGs of three other sizes, against ours with the same weights file
    assert _rel(ours["feats_gen"], theirs["feats_gen"]) < 1e-4
    assert _rel(ours["feats_ref"], theirs["feats_ref"]) < 1e-4
    assert float(np.std(theirs["feats_ref"], 0).mean()) > 1e-3  # the images give different features
    # torch-fidelity's FeatureExtractorInceptionV3 (same keys, loaded strictly) on 299 px uint8 images
    assert _rel(ours["feats_tf"], theirs["feats_tf"]) < 1e-4
    # clean-fid's frechet_distance numerics: well-conditioned, and rank-deficient covariances (eps / imaginary path)
    assert ours["fid_synth0"] == pytest.approx(float(theirs["fid_synth0"]), rel=1e-6)
    assert ours["fid_synth1"] == pytest.approx(float(theirs["fid_synth1"]), rel=1e-5, nan_ok=True)


@pytest.mark.experiment
def test_legacy_pytorch_full_fid_matches_cleanfid(tmp_path):
    """The 2048-d FID end to end (scipy sqrtm of 2048 x 2048: ~10 s per side on one thread)."""
    ours, theirs = _run_reference(tmp_path, full_fid=True)
    value = ours["net"].distance(*fidlib.feature_stats(ours["feats_gen"]), *fidlib.feature_stats(ours["feats_ref"]))
    assert value == pytest.approx(float(theirs["fid"]), rel=1e-4)


# ---------------------------------------------------------------- config, weights

def test_config_states_the_convention():
    assert FidConfig().mode == "torchmetrics"
    FidConfig(mode="legacy_pytorch", features="inception", weights="random")
    with pytest.raises(ConfigError, match="fid.mode must be legacy_pytorch or torchmetrics"):
        FidConfig(mode="clean")
    with pytest.raises(ConfigError, match="set fid.features=inception"):
        FidConfig(mode="legacy_pytorch", features="judge")
    with pytest.raises(ConfigError, match="fid.weights=random is for fid.mode=legacy_pytorch"):
        FidConfig(features="inception", weights="random")
    with pytest.raises(ConfigError, match="reference_n must be >= 2"):
        FidConfig(reference_n=1)


def test_missing_weights_say_where_to_get_them(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(ModelLoadError) as err:
            fi.load_fid_inception(None)
    finally:
        torch.hub.set_dir(old)
    msg = str(err.value)
    assert "\n" not in msg and fi.WEIGHTS_URL in msg and str(tmp_path / "hub" / "checkpoints" / fi.WEIGHTS_FILE) in msg
    with pytest.raises(ModelLoadError, match=r"fid.weights=/nope.pth; download https://"):
        fi.load_fid_inception("/nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(ModelLoadError, match="is not pytorch-fid's Inception weights file"):
        fi.load_fid_inception(str(tmp_path / "bad.pth"))


def test_weights_identity_labels_random_and_custom_files(tmp_path):
    _, ident = fi.load_fid_inception("random")
    assert ident.startswith("random") and "NOT the FID Inception weights" in ident
    torch.save(fi.random_state_dict(1), tmp_path / "w.pth")
    _, ident = fi.load_fid_inception(str(tmp_path / "w.pth"))
    assert ident.startswith("custom w.pth (sha256 ") and "not the FID Inception weights" in ident
    # our keys are pytorch-fid's (torchvision Inception3 with aux_logits=False): 566 tensors, fc 2048 -> 1008
    state = fi.FIDInceptionV3().state_dict()
    assert len(state) == 566 and state["fc.weight"].shape == (1008, 2048)
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state and not any("AuxLogits" in k for k in state)


# ---------------------------------------------------------------- protocol: results.json and cached statistics

@pytest.fixture()
def run_and_refs(tmp_path):
    """A generation run folder of 2 images (64 px) and a reference folder of 3."""
    from prunefit.generation.manifest import MANIFEST

    _images(tmp_path / "run" / "images", [(64, 64)] * 2, 5)
    rows = [{"id": f"{i:03d}", "prompt": f"p{i}", "seed": i, "model": "m"} for i in range(2)]
    (tmp_path / "run" / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _images(tmp_path / "refs", [(70, 50)] * 3, 6)
    return tmp_path / "run", tmp_path / "refs"


def test_fid_ref_and_evaluate_record_and_check_the_protocol(run_and_refs, tmp_path, monkeypatch):
    from prunefit.recipes.evaluate import EvaluateConfig, fid_reference_lines, main

    run, refs = run_and_refs
    monkeypatch.setattr(fidlib.FeatureNet, "distance", lambda self, *stats: 1.5)  # sqrtm of 2048 x 2048 is slow
    legacy = dict(mode="legacy_pytorch", features="inception", weights="random")
    lines = fid_reference_lines(str(refs), FidConfig(**legacy, reference_n=2), str(tmp_path / "ref2.safetensors"))
    assert "legacy_pytorch, inception, N=2" in lines[0] and "random (seed 0)" in lines[1]
    _, _, meta = fidlib.load_stats(tmp_path / "ref2.safetensors")
    assert meta["n"] == 2 and meta["protocol"]["mode"] == "legacy_pytorch"

    cfg = EvaluateConfig(run_dir=str(run), metrics=["fid"], device="cpu")
    cfg.fid = FidConfig(**legacy, reference_stats=str(tmp_path / "ref2.safetensors"), reference_n=2)
    doc = json.loads(main(cfg).results_path.read_text())
    proto = doc["metrics"]["fid"]["protocol"]
    assert doc["metrics"]["fid"]["values"]["fid"] == 1.5
    assert proto["mode"] == "legacy_pytorch" and proto["resolution"] == 299 and proto["n_generated"] == 2
    assert proto["n_reference"] == 2 and proto["resize"] == fi.RESIZE and proto["weights"].startswith("random")

    # another N, another mode: refused in one line, naming what differs
    with pytest.raises(ConfigError, match=r"made with n=2, this evaluation uses n=3; recompute them"):
        fidlib.reference_stats(FidConfig(**legacy, reference_stats=str(tmp_path / "ref2.safetensors"),
                                         reference_n=3), fidlib.feature_network(FidConfig(**legacy)))
    judge = FidConfig(reference_stats=str(tmp_path / "ref2.safetensors"))
    with pytest.raises(ConfigError, match=r"were made with mode='legacy_pytorch'.*this evaluation uses "
                                          r"mode='torchmetrics'") as err:
        fidlib.reference_stats(judge, fidlib.feature_network(judge))
    assert "\n" not in str(err.value)


def test_reference_cache_is_keyed_by_protocol(run_and_refs):
    _, refs = run_and_refs
    judge = FidConfig(reference_images=str(refs))
    net = fidlib.feature_network(judge)
    mu, _, meta = fidlib.reference_stats(judge, net)
    assert meta["protocol"] == net.protocol and meta["n"] == 3
    assert len(list(refs.glob(".fid-stats-*.safetensors"))) == 1
    again, _, _ = fidlib.reference_stats(judge, net)  # read back from the cache
    assert torch.equal(mu, again)
    fidlib.reference_stats(FidConfig(reference_images=str(refs), reference_n=2), net)  # another N: its own file
    assert len(list(refs.glob(".fid-stats-*.safetensors"))) == 2
    old = refs / "old.safetensors"  # statistics from before protocols were recorded
    fidlib.save_stats(old, mu, torch.eye(len(mu), dtype=mu.dtype), {"extractor": "toyworld-judge", "n": 3})
    with pytest.raises(ConfigError, match="were made with mode=None"):
        fidlib.reference_stats(FidConfig(reference_stats=str(old)), net)
