"""Training-memory arithmetic (hand-computed), the activation profile's extrapolation, and the refusal message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from prunefit.errors import ConfigError
from prunefit.training.memory import (
    GB,
    MemoryInputs,
    _saved_bytes,
    activation_profile,
    check_fits,
    estimate,
    suggest_fixes,
)


def test_estimate_is_the_documented_arithmetic():
    m = MemoryInputs(student_params=1000, trainable_params=800, teacher_params=1000, frozen_params=100,
                     saved_bytes_per_sample=50, recompute_bytes=10, batch=4, mixed_precision="bf16",
                     teacher_dtype="bfloat16", optimizers=2, vartheta=True, ema=True, overhead=0.1)
    e = estimate(m)
    assert (e.weights, e.grads, e.optimizer, e.teacher, e.frozen) == (4000, 3200, 12800, 2000, 400)
    assert (e.vartheta, e.ema, e.activations) == (12800, 4000, 105)  # 0.5 x (4 x 50 + 10)
    body = 4000 + 3200 + 12800 + 2000 + 400 + 12800 + 4000 + 105
    assert e.margin == int(0.1 * body) and e.total == body + int(0.1 * body)


def test_refusal_names_the_fix_and_passes_when_it_fits():
    big = MemoryInputs(student_params=10**9, trainable_params=10**9, saved_bytes_per_sample=4 * GB, batch=8)
    ckpt = MemoryInputs(student_params=10**9, trainable_params=10**9, saved_bytes_per_sample=GB // 4,
                        recompute_bytes=GB // 8, batch=8)
    cap = 24 * GB  # 16 GB of weights/grads/AdamW + 32 GiB of activations: only checkpointing brings it under
    with pytest.raises(ConfigError, match="gradient_checkpointing=true"):
        check_fits("finetune", big, cap, "cuda:0", checkpointed=ckpt)
    assert suggest_fixes(big, cap, ckpt) == ["train.gradient_checkpointing=true"]
    assert check_fits("finetune", ckpt, cap, "cuda:0").total < cap
    assert check_fits("finetune", big, 0, "cpu").total > cap  # unknown capacity: no check


def test_no_fix_fits_says_so():
    m = MemoryInputs(student_params=10**10, trainable_params=10**10)
    with pytest.raises(ConfigError, match="larger device"):
        check_fits("bilevel", m, GB, "cuda:0")


def test_activation_profile_extrapolates_exactly_to_a_measured_size(tiny):
    import copy

    unet = copy.deepcopy(tiny.unet)
    prof = activation_profile(unet, latent=24, text_length=77, small=(8, 16))
    direct, unit = _saved_bytes(unet.train().requires_grad_(True), 24, 77)
    assert prof.plain == pytest.approx(direct, rel=1e-6)
    assert 0 < prof.checkpointed < prof.plain and 0 < prof.recompute < prof.plain
    assert prof.recompute == pytest.approx(unit, rel=1e-6)


def test_finetune_refuses_up_front_when_the_budget_is_too_small(tmp_path, monkeypatch, capsys):
    from prunefit.cli import main

    monkeypatch.setenv("PRUNEFIT_MEMORY_LIMIT_GB", "0.001")  # 1 MiB: even the tiny model's weights do not fit
    out = tmp_path / "ft"
    code = main(["finetune", "model=tiny", "train.max_steps=1", "train.micro_batch_size=2", f"output_dir={out}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "finetune needs about" in err and "PRUNEFIT_MEMORY_LIMIT_GB=0.001" in err
    assert not (out / "checkpoints").exists() and not (out / "pipeline").exists()


def test_second_optimizer_covers_only_the_upper_subset_and_bilevel_never_hears_of_a_bf16_teacher():
    """SD 1.5 smoke: bilevel official with upper_train_method=xattn was refused at 23.2 GiB, counting a second
    AdamW over all 860 M parameters and suggesting a bf16 teacher that bilevel itself refuses."""
    full = MemoryInputs(student_params=1000, trainable_params=1000, teacher_params=1000, optimizers=2)
    xattn = replace(full, extra_optimizer_params=60)
    assert estimate(full).optimizer == 16000 and estimate(xattn).optimizer == 8000 + 480
    tight = replace(full, teacher_dtype_fixed=True)
    cap = estimate(replace(full, teacher_dtype="bfloat16")).total  # only the bf16 teacher would fit
    assert suggest_fixes(full, cap) == ["train.teacher_dtype=bfloat16"]
    assert suggest_fixes(tight, cap) == []
