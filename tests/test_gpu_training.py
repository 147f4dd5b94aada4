"""The training loop as it runs on CUDA, proven on CPU: fp16 loss scaling per phase, checkpoints gathered on every
rank and read onto the CPU, one device for every component, torch.compile with feature KD, speed settings."""

from __future__ import annotations

import copy
import functools
import json
from types import SimpleNamespace

import pytest
import torch

from prunefit.config.load import load_config
from prunefit.config.schema import FinetuneConfig, PruneConfig, TrainConfig
from prunefit.errors import ConfigError
from prunefit.models.features import capture_features
from prunefit.objectives.base import LossOutput
from prunefit.training import checkpoint, loop, runtime
from prunefit.training.loop import Phase, run_phase


def _linear_phase(weight, loss_fn, *, lr=1.0, scaler=None, max_grad_norm=None, opt=torch.optim.SGD):
    """A one-layer phase whose loss is ``loss_fn(weight)``."""
    model = torch.nn.Linear(weight.numel(), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight.view(1, -1))
    params = list(model.parameters())
    phase = Phase(name="p", objective=lambda start, n: LossOutput(loss_fn(model.weight), {}),
                  optimizer=opt(params, lr=lr), params=params, lr=lr, max_grad_norm=max_grad_norm, model=model)
    phase.scaler = scaler
    return phase


def _plain_backward(loss):
    loss.backward()


# --- row 8: fp16, one GradScaler per phase --------------------------------------------------------------------


def test_fp16_overflow_step_is_skipped_and_weights_unchanged():
    """A gradient that overflows once scaled (1e35 x 65536 > float32 max) makes the scaler skip the step: weights
    unchanged, scale halved. (The old loop had no scaler: bilevel / prune / erase optimizers stepped on
    65536x-scaled gradients and never skipped an overflow.)"""
    w0 = torch.ones(3)
    phase = _linear_phase(w0, lambda w: (w * 1e35).sum(), scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    run_phase(phase, 0, _plain_backward)
    assert torch.equal(phase.model.weight.detach().view(-1), w0)
    assert phase.scaler.get_scale() == 2.0**15 and phase.step == 1


def test_fp16_clipping_sees_unscaled_gradients(tmp_path, monkeypatch):
    """Under fp16, fit's phases scale their own loss and unscale before clipping: the clip norm is the true
    gradient's (5), so a max norm of 100 leaves the step exact. The old fit backpropagated accelerate's scaled loss
    and clipped the 65536x gradient (norm 327680) down to 100. (fp16 needs CUDA; the stand-in accelerator scales
    as accelerate's backward does.)"""
    norms = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: norms.append(real(*a, **k)) or norms[-1])
    c = torch.tensor([3.0, 4.0, 0.0])
    phase = _linear_phase(torch.ones(3), lambda w: (w.view(-1) * c).sum(), lr=0.1, max_grad_norm=100.0)
    acc = _FakeAccelerator(True)
    acc.mixed_precision = "fp16"
    acc.backward = lambda loss: (loss * 2.0**16).backward()  # accelerate's fp16 backward: its one scaler
    runtime.fit([phase], phase.model, TrainConfig(max_steps=1, log_every=1, mixed_precision="no"), tmp_path, acc)
    assert [float(n) for n in norms] == [5.0] and isinstance(phase.scaler, torch.amp.GradScaler)
    assert torch.allclose(phase.model.weight.detach().view(-1), torch.ones(3) - 0.1 * c, atol=0, rtol=1e-6)


def test_fp16_gives_each_phase_its_own_scaler_and_plain_backward():
    """fit attaches one scaler per phase under fp16 (accelerate's single scaler would scale the loss twice and
    step every optimizer on one overflow flag); bf16 / no attach none."""
    phases = [_linear_phase(torch.ones(2), lambda w: w.sum()) for _ in range(2)]
    assert not runtime.attach_grad_scalers(phases, SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu")))
    assert all(ph.scaler is None for ph in phases)
    assert runtime.attach_grad_scalers(phases, SimpleNamespace(mixed_precision="fp16", device=torch.device("cpu")))
    assert phases[0].scaler is not phases[1].scaler and all(isinstance(ph.scaler, torch.amp.GradScaler)
                                                            for ph in phases)


def test_scaler_state_is_checkpointed_and_resumed(tmp_path):
    """A resumed fp16 run continues with the loss scale and growth tracker it stopped at."""
    phase = _linear_phase(torch.ones(3), lambda w: w.sum(), scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    run_phase(phase, 0, _plain_backward)
    run_phase(phase, 1, _plain_backward)
    saved = phase.scaler.state_dict()
    path = checkpoint.save_checkpoint(tmp_path, 2, phase.model, [phase])
    fresh = _linear_phase(torch.zeros(3), lambda w: w.sum(), scaler=torch.amp.GradScaler("cpu"))
    checkpoint.load_checkpoint(path, fresh.model, [fresh])
    run_phase(fresh, 2, _plain_backward)  # the lazily made scale starts from the restored one
    run_phase(phase, 2, _plain_backward)
    assert fresh.scaler.state_dict() == phase.scaler.state_dict() and saved["_growth_tracker"] == 2


# --- row 6: resume reads onto the CPU first -----------------------------------------------------------------------


def test_resume_reads_every_file_onto_the_cpu(tmp_path, monkeypatch):
    """Optimizer (and scaler) state is read with map_location="cpu" and safetensors onto the CPU, then moved to
    each parameter's device by load_state_dict: a run saved on cuda:1 resumes on cuda:0 or another rank. (Only
    the CPU here: the call is pinned, and the resumed run stays exact.)"""
    phase = _linear_phase(torch.ones(3), lambda w: (w ** 2).sum(), lr=0.1, opt=torch.optim.AdamW,
                          scaler=torch.amp.GradScaler("cpu"))
    run_phase(phase, 0, _plain_backward)
    path = checkpoint.save_checkpoint(tmp_path, 1, phase.model, [phase], ema={"weight": phase.model.weight.detach()})
    loads, files = [], []
    real_load, real_file = torch.load, checkpoint.load_file
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("map_location")) or real_load(*a, **k))
    monkeypatch.setattr(checkpoint, "load_file", lambda f, device="cpu": files.append(device) or real_file(f, device))
    fresh = _linear_phase(torch.zeros(3), lambda w: (w ** 2).sum(), lr=0.1, opt=torch.optim.AdamW,
                          scaler=torch.amp.GradScaler("cpu"))
    ema: dict = {}
    checkpoint.load_checkpoint(path, fresh.model, [fresh], ema)
    assert loads == ["cpu", "cpu"] and files == ["cpu"] * 3
    assert ema["weight"].device == fresh.model.weight.device
    run_phase(fresh, 1, _plain_backward)
    run_phase(phase, 1, _plain_backward)
    assert torch.equal(fresh.model.weight, phase.model.weight)


# --- row 5: checkpoints gathered on every rank; FSDP refused -----------------------------------------------------


class _FakeAccelerator:
    """The accelerator surface fit uses, for one rank of a launch (no process group)."""

    def __init__(self, main: bool) -> None:
        self.is_main_process, self.process_index, self.num_processes = main, 0 if main else 1, 1
        self.device, self.mixed_precision, self.distributed_type = torch.device("cpu"), "no", "MULTI_GPU"
        self.gathered = 0

    def get_state_dict(self, model):
        self.gathered += 1
        return {k: v + 1 for k, v in model.state_dict().items()}  # marks what was written

    def wait_for_everyone(self) -> None:
        pass

    def backward(self, loss) -> None:
        loss.backward()

    def autocast(self):
        return torch.autocast("cpu", enabled=False)


@pytest.mark.parametrize("main", [True, False])
def test_checkpoint_weights_are_gathered_on_every_rank(tmp_path, main):
    """Every rank takes part in getting the state dict (a collective under sharding: rank 0 alone would hang or
    save a shard); rank 0 writes what was gathered. The old fit called model.state_dict() on rank 0 only."""
    phase = _linear_phase(torch.ones(3), lambda w: w.sum(), lr=0.5)
    acc = _FakeAccelerator(main)
    cfg = TrainConfig(max_steps=2, checkpoint_every=1, log_every=1, mixed_precision="no")
    runtime.fit([phase], phase.model, cfg, tmp_path, acc)
    assert acc.gathered == 2
    if main:
        saved = checkpoint.load_file(str(checkpoint.latest_checkpoint(tmp_path) / "model.safetensors"))
        assert torch.equal(saved["weight"], phase.model.weight.detach() + 1)


def test_fsdp_is_refused_even_where_accelerate_would_shard(monkeypatch):
    """On a GPU machine accelerate really shards; prunefit refuses FSDP there too (in one line, before any model is
    loaded) until a GPU run has shown it. The fake Accelerator stands in for a GPU launch; the old code accepted it."""
    import accelerate

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(accelerate, "Accelerator", lambda **k: SimpleNamespace(distributed_type="FSDP",
                                                                                 device=torch.device("cuda", 0)))
    with pytest.raises(ConfigError, match="does not support FSDP yet.*data-parallel"):
        runtime.make_accelerator(TrainConfig(mixed_precision="no"), "cpu")


def test_a_wrapper_that_replaces_parameters_is_refused():
    """The phase's optimizer and clipping hold the parameters it was built with: a wrapper that replaced them (as
    sharding does) would leave them updating stale tensors."""
    phase = _linear_phase(torch.ones(2), lambda w: w.sum())
    same = SimpleNamespace(prepare=lambda m: m, distributed_type="MULTI_GPU")
    assert runtime.prepare_model(same, phase, phase.model) is phase.model
    swapped = SimpleNamespace(prepare=copy.deepcopy, distributed_type="FSDP")
    with pytest.raises(ConfigError, match="replaced the parameters of phase 'p'"):
        runtime.prepare_model(swapped, phase, phase.model)


# --- row 7: one device for every component -----------------------------------------------------------------------


def test_explicit_gpu_becomes_the_accelerators_device(monkeypatch):
    """device=cuda:1 in one process: the current GPU is set to 1 before the Accelerator is made (accelerate's
    single-process device is the current GPU), and run_device names it with its index. (No GPU here: torch.cuda
    and the Accelerator are stand-ins; the old code left accelerate on cuda:0.)"""
    import accelerate

    made, current = {}, []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: current.append(i))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[-1])
    monkeypatch.setattr(runtime, "set_backend_flags", lambda cfg, kind: None)
    monkeypatch.setattr(accelerate, "Accelerator", lambda **k: made.update(k) or SimpleNamespace(
        distributed_type="NO", device=torch.device("cuda")))
    acc = runtime.make_accelerator(TrainConfig(mixed_precision="no"), "cuda:1")
    assert current == [1] and made["cpu"] is False
    assert runtime.run_device(acc) == torch.device("cuda", 1)


def test_explicit_other_gpu_under_a_launch_is_refused():
    """Under a multi-process launch each rank trains on cuda:<LOCAL_RANK>; another explicit GPU is refused."""
    runtime.check_launch_device("cuda:1", 2, 1, 2)  # its own
    runtime.check_launch_device("cuda:0", 1, None, 2)  # one process: any GPU
    with pytest.raises(ConfigError, match=r"device=cuda:0 but process 1 .* cuda:1; use device=auto under accelerate"):
        runtime.check_launch_device("cuda:0", 2, 1, 2)


class _Loaded(Exception):
    pass


def _recipes():
    from prunefit.recipes import bilevel, erase, finetune, prune
    from prunefit.removal.bilevel import BilevelConfig
    from prunefit.removal.config import EraseConfig

    return [(finetune, FinetuneConfig, ["model=tiny"]), (bilevel, BilevelConfig, ["model=tiny", "concepts=[x]"]),
            (erase, EraseConfig, ["model=tiny", "removal.method=esd", "removal.concepts=[x]"]),
            (prune, PruneConfig, ["model=tiny"])]


@pytest.mark.parametrize("recipe", range(4), ids=["finetune", "bilevel", "erase", "prune"])
def test_recipes_load_every_component_on_the_accelerators_device(recipe, tmp_path, monkeypatch):
    """The teacher, VAE and text encoder are loaded where accelerate puts the student (the accelerator's device),
    not on the config's string: the old recipes loaded on cfg.device (cuda:1) while accelerate used cuda:0."""
    module, config, args = _recipes()[recipe]
    cfg = load_config(config, [], [*args, f"output_dir={tmp_path / 'run'}"])
    cfg.device = "cuda:1"  # what the config asked; the accelerator below says where this process really runs
    seen = []
    acc = SimpleNamespace(device=torch.device("cpu"), is_main_process=False, num_processes=1, process_index=0)
    monkeypatch.setattr(module, "make_accelerator", lambda *a, **k: acc)

    def load(spec, *a, device="cpu", **k):
        seen.append(str(device))
        raise _Loaded

    monkeypatch.setattr(module, "load_components", load)
    with pytest.raises(_Loaded):
        module.main(cfg)
    assert seen == ["cpu"]


# --- row 10: torch.compile with feature KD -----------------------------------------------------------------------


class _Block(torch.nn.Module):
    def __init__(self, tuple_out: bool) -> None:
        super().__init__()
        self.lin, self.tuple_out = torch.nn.Linear(4, 4), tuple_out

    def forward(self, x):
        y = self.lin(x).tanh()
        return (y, x) if self.tuple_out else y


class _ToyUNet(torch.nn.Module):
    """The block layout capture_features reads (down blocks return (hidden, residuals)), small enough to compile."""

    def __init__(self) -> None:
        super().__init__()
        self.down_blocks = torch.nn.ModuleList([_Block(True), _Block(True)])
        self.mid_block = _Block(False)
        self.up_blocks = torch.nn.ModuleList([_Block(False)])

    def forward(self, x):
        for b in self.down_blocks:
            x = b(x)[0]
        x = self.mid_block(x)
        for b in self.up_blocks:
            x = b(x)
        return x


def _feature_kd_step(student, teacher, x):
    """Feature KD as DenoisingObjective computes it: teacher features, student features, their mean MSE."""
    with torch.no_grad(), capture_features(teacher) as ft:
        teacher(x)
    with capture_features(student) as fs:
        out = student(x)
    assert len(fs) == len(ft) == 4
    loss = out.square().mean() + sum(torch.nn.functional.mse_loss(s, t) for s, t in zip(fs, ft)) / len(fs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in student.parameters()]


def test_compiled_feature_kd_equals_eager(monkeypatch):
    """A compiled forward does not notice hooks added and removed around it (dynamo guards only count them): after a
    forward without capture (validation, sampling) the old code's compiled forward fed its block outputs to the
    first capture's list, so feature KD saw no features. Kept hooks switched on and off give eager's loss and
    gradients at every step. (backend="eager": the hook guards are dynamo's, whatever the backend.)"""
    from prunefit.training.students import apply_speedups

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)
    eager_s, eager_t = _ToyUNet(), _ToyUNet()
    comp_s, comp_t = copy.deepcopy(eager_s), copy.deepcopy(eager_t)
    apply_speedups(comp_s, comp_t, TrainConfig(compile=True, mixed_precision="no"))
    for i in range(4):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(i))
        for m in (comp_s, comp_t, eager_s, eager_t):
            m.zero_grad(set_to_none=True)
        if i == 1:
            with torch.no_grad():
                assert torch.allclose(comp_s(x), eager_s(x))  # a forward without capture in between
        (la, ga), (lb, gb) = _feature_kd_step(comp_s, comp_t, x), _feature_kd_step(eager_s, eager_t, x)
        assert torch.allclose(la, lb, rtol=1e-6, atol=1e-7)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(ga, gb))
    torch._dynamo.reset()


def test_student_copy_has_its_own_compiled_forward(monkeypatch):
    """Bilevel's vartheta twin: a plain deep copy of a compiled student kept the original's compiled forward (it ran
    the original's weights) and its feature hooks; copy_student gives the twin its own."""
    from prunefit.training.students import apply_speedups, copy_student

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)
    student, teacher = _ToyUNet(), _ToyUNet()
    t = TrainConfig(compile=True, mixed_precision="no")
    apply_speedups(student, teacher, t)
    twin = copy_student(student, t)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    x = torch.randn(2, 4)
    with torch.no_grad(), capture_features(twin) as ft, capture_features(student) as fs:
        out_twin = twin(x)
        assert len(ft) == 4 and not fs  # the twin's blocks fill the twin's list only
        out_student = student(x)
    assert not torch.allclose(out_twin, out_student) and len(fs) == 4
    assert all(p.requires_grad for p in twin.parameters())
    torch._dynamo.reset()


# --- speed: backend flags, DDP buckets, own gradients, no host syncs, recorded settings ---------------------------


def test_tf32_and_cudnn_benchmark_follow_the_config_on_cuda_only():
    """allow_tf32 / cudnn_benchmark set torch's flags where the Accelerator is made, on CUDA; nothing on CPUs."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        runtime.set_backend_flags(TrainConfig(allow_tf32=True, cudnn_benchmark=False), "cuda")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.benchmark) == (True, True, False)
        runtime.set_backend_flags(TrainConfig(allow_tf32=False, cudnn_benchmark=True), "cuda")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.benchmark) == (False, False, True)
        runtime.set_backend_flags(TrainConfig(allow_tf32=True, cudnn_benchmark=False), "cpu")
        assert torch.backends.cudnn.benchmark is True  # untouched
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = flags


def test_ddp_uses_gradients_as_bucket_views():
    """DDP gradients are views into its all-reduce buckets (no second copy of every gradient)."""
    from accelerate.state import AcceleratorState

    try:
        acc = runtime.make_accelerator(TrainConfig(mixed_precision="no"), "cpu")
        assert acc.ddp_handler.gradient_as_bucket_view is True
        assert acc.ddp_handler.find_unused_parameters is False
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_a_phase_computes_gradients_only_for_its_own_parameters():
    """Bilevel's upper phase trains a subset of the shared student: the rest record no gradient during its forward
    and backward (the old loop computed them, then dropped them); flags are restored after; the step is unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    ref = copy.deepcopy(model)
    seen = []

    def objective(start, n):
        seen.append([p.requires_grad for p in model.parameters()])
        return LossOutput(model(torch.ones(1, 2)).sum(), {})

    own = list(model[1].parameters())
    phase = Phase(name="upper", objective=objective, optimizer=torch.optim.SGD(own, lr=0.1), params=own, lr=0.1,
                  model=model)
    run_phase(phase, 0, _plain_backward)
    assert seen == [[False, False, True, True]]
    assert all(p.requires_grad for p in model.parameters())
    ref_opt = torch.optim.SGD(ref[1].parameters(), lr=0.1)
    ref(torch.ones(1, 2)).sum().backward()
    ref_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_gradient_averaging_reads_nothing_back_when_every_gradient_is_present(one_process_group, monkeypatch):
    """average_gradients (phases not wrapped in DDP) all-reduces once and reads the presence counts back to the host
    only when a gradient is missing locally: no device-to-host sync in the common step. The old code read them
    back (``tolist``) at every step."""
    params = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
    params[0].grad, params[1].grad = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "tolist", lambda self: pytest.fail("host read-back in a step"))
        loop.average_gradients(params, 1)
    assert torch.equal(params[0].grad, torch.tensor([1.0, 2.0])) and torch.equal(params[1].grad,
                                                                                  torch.tensor([3.0, 4.0, 5.0]))
    params[1].grad = None
    loop.average_gradients(params, 1)  # a missing gradient stays missing (read back: the slow, rare path)
    assert params[1].grad is None and torch.equal(params[0].grad, torch.tensor([1.0, 2.0]))


def test_the_run_records_its_effective_settings(tmp_path, capsys):
    """Device, precision, TF32, cuDNN autotuning, channels_last, compile and world size: printed once and written
    as the first line of log.jsonl."""
    from accelerate.state import AcceleratorState

    phase = _linear_phase(torch.ones(3), lambda w: w.sum(), lr=0.5)
    cfg = TrainConfig(max_steps=1, checkpoint_every=1, log_every=1, mixed_precision="no", channels_last=True)
    try:
        acc = runtime.make_accelerator(cfg, "cpu")
        runtime.fit([phase], phase.model, cfg, tmp_path, acc)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["settings"] == {
        "device": "cpu", "mixed_precision": "no", "grad_scaler": False, "allow_tf32": False, "cudnn_benchmark": False,
        "channels_last": True, "compile": False, "world_size": 1}
    assert "run: device cpu, mixed_precision no" in capsys.readouterr().out
