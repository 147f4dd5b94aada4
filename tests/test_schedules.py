"""diffusers' training utilities in the loop: ``train.lr_scheduler`` (get_scheduler as a pure function of the phase
step) and the EMA (EMAModel): today's numbers by default, diffusers' sequences step for step, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from prunefit.config.load import load_config
from prunefit.config.schema import LR_SCHEDULERS, FinetuneConfig, TrainConfig
from prunefit.errors import ConfigError
from prunefit.training.loop import constant_with_warmup, lr_schedule


@pytest.mark.parametrize("warmup", [0, 1, 2, 7, 250])
def test_the_default_schedule_is_todays_constant_with_warmup(warmup):
    assert TrainConfig().lr_scheduler == "constant_with_warmup"
    ours, today = lr_schedule("constant_with_warmup", warmup, 1000, 1e-6), constant_with_warmup(warmup)
    assert [ours(s) for s in range(600)] == [today(s) for s in range(600)]
    assert [ours(s) for s in range(3)] == [min(1.0, (s + 1) / warmup) if warmup else 1.0 for s in range(3)]


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_schedule_follows_diffusers_scheduler_step_for_step(name):
    """Phase step s trains at the LR diffusers' scheduler holds after s + 1 ``scheduler.step()`` calls."""
    from diffusers.optimization import get_scheduler

    lr, warmup, total = 3e-4, 4, 30
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
    theirs = []
    for _ in range(total):
        opt.step()
        sched.step()
        theirs.append(opt.param_groups[0]["lr"])
    factor = lr_schedule(name, warmup, total, lr)
    assert [lr * factor(s) for s in range(total)] == theirs
    if name == "cosine":  # by hand: half a cosine after the warm-up, to 0 at the last step
        import math

        assert lr * factor(9) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (10 - warmup) / (total - warmup))))
        assert factor(total - 1) == pytest.approx(0.0, abs=1e-12) and factor(0) == 1 / warmup


def test_scheduler_names_are_diffusers_and_an_unknown_one_is_refused():
    from diffusers.optimization import SchedulerType

    assert set(LR_SCHEDULERS) == {t.value for t in SchedulerType} - {"piecewise_constant"}
    with pytest.raises(ConfigError, match=r"unknown train.lr_scheduler 'cosinus'; available: \['constant_with_warmup'"):
        load_config(FinetuneConfig, [], ["train.lr_scheduler=cosinus"])


def test_the_ema_is_diffusers_emamodel_on_todays_schedule():
    from diffusers.training_utils import EMAModel

    from prunefit.training.runtime import EMA

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema, ref = EMA(decay=0.9), None
    for step in range(1, 30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        if ref is None:  # the shadow starts at the weights after the first step (ema_update's "new key")
            ref = {k: p.detach().clone() for k, p in model.named_parameters()}
        else:
            d = min(0.9, (1 + step) / (10 + step))
            ref = {k: ref[k] - (1 - d) * (ref[k] - p.detach()) for k, p in model.named_parameters()}
        ema.update(model, step)
        assert all(torch.equal(ema.shadow[k], ref[k]) for k in ref), step
    assert isinstance(ema.model, EMAModel) and ema.model.cur_decay_value == 30 / 39  # step 29: (1 + 29) / (10 + 29)


def _cfg(tmp_path, name, *extra):
    base = ["model=tiny", "train.micro_batch_size=4", "train.lr=1e-3", "train.warmup_steps=2", "train.log_every=1",
            "train.checkpoint_every=2", "train.ema_decay=0.9", "train.lr_scheduler=cosine", "train.report_to=none"]
    return load_config(FinetuneConfig, [], [*base, f"output_dir={tmp_path / name}", *extra])


def _weights(run_dir):
    return load_file(str(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_ema_and_schedule_resume_exactly_also_from_a_checkpoint_without_emamodel_state(tmp_path, monkeypatch):
    """4 steps in one go == a run of max_steps=4 killed in step 3 then resumed (EMA weights shipped, cosine over 4
    steps), also when the checkpoint predates EMAModel (ema.safetensors only, no "ema" entry in state.json)."""
    from prunefit.recipes import finetune
    from prunefit.training import loop

    finetune.main(_cfg(tmp_path, "full", "train.max_steps=4"))
    a = _weights(tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoints" / "step-00000004"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["ema"]["optimization_step"] == 5 and state["ema"]["decay"] == 0.9  # diffusers counts to step + 1
    shadow = load_file(str(ckpt / "ema.safetensors"))
    assert shadow.keys() == a.keys() and all(torch.equal(shadow[k], a[k]) for k in a)  # the EMA weights ship
    raw = load_file(str(ckpt / "model.safetensors"))
    assert any(not torch.equal(raw[k], a[k]) for k in a)  # ... and differ from the raw weights

    class Killed(Exception):
        pass

    def kill(kind, index):
        if kind == "STEP" and index == 2:
            raise Killed

    for name in ("split", "old"):
        with monkeypatch.context() as m:
            m.setattr(loop, "fault_pause", kill)
            with pytest.raises(Killed):
                finetune.main(_cfg(tmp_path, name, "train.max_steps=4"))
        if name == "old":
            path = tmp_path / name / "checkpoints" / "step-00000002" / "state.json"
            path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "ema"}))
        finetune.main(_cfg(tmp_path, name, "train.max_steps=4", "resume=latest"))
        b = _weights(tmp_path / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
