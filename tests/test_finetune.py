"""Fine-tuning: the phase loop, exact resume, gradient accumulation, one teacher forward, caches, bad input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from prunefit.config.load import load_config
from prunefit.config.schema import FinetuneConfig
from prunefit.errors import ConfigError, ModelLoadError, OutputError
from prunefit.recipes import finetune

BASE = ["model=tiny", "train.micro_batch_size=4", "train.lr=1e-3", "train.warmup_steps=2", "train.log_every=1",
        "train.checkpoint_every=2"]


def _cfg(tmp_path, name, *extra):
    return load_config(FinetuneConfig, [], [*BASE, f"output_dir={tmp_path / name}", *extra])


def _weights(run_dir):
    return load_file(str(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_resume_is_bit_identical(tmp_path):
    finetune.main(_cfg(tmp_path, "full", "train.max_steps=4"))
    finetune.main(_cfg(tmp_path, "split", "train.max_steps=2"))
    finetune.main(_cfg(tmp_path, "split", "train.max_steps=4", "resume=latest"))
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000002" / "model.safetensors"))
    assert any(not torch.equal(before[k], a[k]) for k in a)  # training moved the weights


def test_validation_logs_held_out_losses_and_leaves_training_alone(tmp_path):
    import json

    finetune.main(_cfg(tmp_path, "plain", "train.max_steps=2"))
    finetune.main(_cfg(tmp_path, "val", "train.max_steps=2", "train.val_every=1", "train.val_samples=2"))
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "val")
    assert all(torch.equal(a[k], b[k]) for k in a)  # held-out draws take nothing from the training streams
    rows = [json.loads(x) for x in (tmp_path / "val" / "log.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val/total" in r]
    assert [r["step"] for r in val] == [1, 2] and all(0 < r["val/total"] < 100 for r in val)
    assert {"val/ddpm", "val/output_kd", "val/feature_kd"} <= set(val[0])


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    finetune.main(_cfg(tmp_path, "b8", "train.max_steps=2", "train.micro_batch_size=8"))
    finetune.main(_cfg(tmp_path, "a2", "train.max_steps=2", "train.micro_batch_size=4", "train.grad_accum_steps=2"))
    a, b = _weights(tmp_path / "b8"), _weights(tmp_path / "a2")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_one_teacher_forward_per_step_and_parts(tiny):
    from prunefit.data.datasets import ToyWorldData
    from prunefit.training.students import denoising_phase

    cfg = load_config(FinetuneConfig, [], ["model=tiny"])
    student = __import__("copy").deepcopy(tiny.unet).requires_grad_(True)
    calls = []
    handle = tiny.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        _, objective = denoising_phase("lower", student=student, teacher=tiny.unet, comps=tiny, data=ToyWorldData(),
                                       cfg=cfg, seed=0)
        out = objective(0, 4)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert set(out.parts) == {"ddpm", "output_kd", "feature_kd"}
    expected = out.parts["ddpm"] + 2.0 * out.parts["output_kd"] + 0.1 * out.parts["feature_kd"]
    assert torch.allclose(out.total, expected)
    assert out.parts["output_kd"].item() == pytest.approx(0.0, abs=1e-12)  # student == teacher at the start


def test_cached_latents_give_the_same_losses(tiny, tmp_path):
    from prunefit.data.cache import build_cache, load_cache
    from prunefit.data.datasets import ToyWorldData
    from prunefit.training.students import denoising_phase

    data = ToyWorldData(seed=3)
    build_cache(tiny, data, 8, tmp_path / "cache", batch_size=4, meta={"model": "tiny"})
    cfg = load_config(FinetuneConfig, [], ["model=tiny"])
    student = __import__("copy").deepcopy(tiny.unet).requires_grad_(True)
    _, plain = denoising_phase("lower", student=student, teacher=tiny.unet, comps=tiny, data=data, cfg=cfg, seed=0)
    _, cached = denoising_phase("lower", student=student, teacher=tiny.unet, comps=tiny, data=data, cfg=cfg, seed=0,
                                cache=load_cache(tmp_path / "cache"))
    a, b = plain(4, 4), cached(4, 4)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-4)


def test_nan_loss_stops_with_step_and_term(tmp_path, monkeypatch):
    from prunefit.objectives import denoising
    from prunefit.training.loop import NonFiniteLossError

    real = denoising.weighted_mse
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        value = real(*a, **k)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(denoising, "weighted_mse", flaky)
    with pytest.raises(NonFiniteLossError, match=r"non-finite lower loss at step 3 \(term ddpm = nan\)"):
        finetune.main(_cfg(tmp_path, "nan", "train.max_steps=5"))
    assert (tmp_path / "nan" / "checkpoints" / "step-00000002").is_dir()  # the last good checkpoint stays


def test_bad_inputs(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        finetune.main(_cfg(tmp_path, "x", "model=/nonexistent/teacher", "train.max_steps=1"))
    with pytest.raises(ConfigError, match="unknown config key 'loss.kd_out'"):
        load_config(FinetuneConfig, [], ["loss.kd_out=1.0"])
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        load_config(FinetuneConfig, [], ["train.lr=-1"])
    finetune.main(_cfg(tmp_path, "done", "train.max_steps=2"))
    with pytest.raises(OutputError, match="already holds a finished"):
        finetune.main(_cfg(tmp_path, "done", "train.max_steps=2"))


def test_expert_of_another_base_model_is_refused(tmp_path):
    import copy

    from prunefit.models.components import load_components
    from prunefit.models.tiny import TinySDConfig, build_unet
    from prunefit.pruning.expert import expert_info, save_expert
    from prunefit.pruning.materialize import materialize
    from prunefit.pruning.spec import gate_spec

    other = build_unet(TinySDConfig(unet_channels=(16, 32, 32), norm_groups=4))
    spec = gate_spec(other, 8)
    arch = torch.ones(spec.dim)
    e = copy.deepcopy(other)
    kept = materialize(e, spec, arch)
    save_expert(e, expert_info(other, spec, arch, "other", kept, 1.0, {}), tmp_path / "e")
    assert load_components("tiny").unet.config.block_out_channels != other.config.block_out_channels
    with pytest.raises(ModelLoadError, match="pruned from another base model"):
        finetune.main(_cfg(tmp_path, "y", f"student={tmp_path / 'e'}", "train.max_steps=1"))


def test_bf16_teacher_targets_are_close_and_bilevel_refuses_it(tiny):
    from prunefit.data.datasets import ToyWorldData
    from prunefit.training.students import denoising_phase

    cfg = load_config(FinetuneConfig, [], ["model=tiny"])
    student = __import__("copy").deepcopy(tiny.unet).requires_grad_(True)
    _, objective = denoising_phase("lower", student=student, teacher=tiny.unet, comps=tiny, data=ToyWorldData(),
                                       cfg=cfg, seed=0)
    batch = objective.inputs(0, 4)
    noisy = objective.add_noise(batch)
    out32, feats32 = objective.teacher_forward(noisy, batch)
    objective.teacher = __import__("copy").deepcopy(tiny.unet).to(torch.bfloat16)
    out16, feats16 = objective.teacher_forward(noisy, batch)
    assert out16.dtype == torch.float32 and not out16.is_inference()  # usable by the student's losses
    assert ((out16 - out32).norm() / out32.norm()).item() < 0.02
    assert len(feats16) == len(feats32) > 0
    loss = objective.loss(batch)
    loss.total.backward()  # the student's graph saves the teacher's targets: no inference-tensor error
    assert torch.isfinite(loss.total)
    from prunefit.recipes import bilevel
    from prunefit.removal.bilevel import BilevelConfig

    bl = load_config(BilevelConfig, [], ["model=tiny", "concepts=[skull]", "train.teacher_dtype=bfloat16"])
    with pytest.raises(ConfigError, match="teacher_dtype must stay float32 for bilevel"):
        bilevel.main(bl)
    with pytest.raises(ConfigError, match="teacher_dtype must be float32, bfloat16 or float16"):
        load_config(FinetuneConfig, [], ["train.teacher_dtype=int8"])
