"""Training-memory arithmetic: what a fine-tuning / bilevel step holds on its device, and an up-front refusal.

The estimate is pure arithmetic over parameter counts and a per-sample activation figure:

    weights       4 B x student params (fp32 master weights; mixed precision casts per op)
    grads         4 B x trainable params
    optimizer     8 B x trainable params per AdamW (exp_avg + exp_avg_sq); bilevel official's second AdamW
                  covers only the upper method's parameters (all of them for its default train_method=full)
    teacher       2 or 4 B x teacher params (teacher_dtype), forward under inference_mode
    frozen        4 B x VAE + text-encoder params (resident; 0 when they are not loaded)
    vartheta twin 16 B x trainable params (its weights, grads and AdamW states)
    EMA           4 B x student params
    activations   batch x saved bytes per sample (x 0.5 under bf16/fp16 autocast), + with gradient
                  checkpointing the recompute of the largest checkpointed block
    margin        ``overhead`` x the sum (allocator fragmentation, workspaces, CUDA context)

The per-sample activation bytes are measured once, cheaply, by ``activation_profile``: two small-latent forwards
of the real student with autograd's saved-tensor hooks (parameters excluded), fitted to a + b * latent pixels and
extrapolated, which is exact for the conv / norm / linear terms (they scale with the pixel count) and assumes
memory-efficient attention (no stored attention matrix), as SDPA's flash / efficient kernels on GPU and CPU do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Optional

import torch

from prunefit.errors import ConfigError

GB = 2**30
_PRECISION_FACTOR = {"no": 1.0, "fp32": 1.0, "bf16": 0.5, "fp16": 0.5}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class MemoryInputs:
    """What sets a training step's memory. Parameter counts are numbers of elements; bytes are bytes."""

    student_params: int
    trainable_params: int
    teacher_params: int = 0
    frozen_params: int = 0
    saved_bytes_per_sample: int = 0
    """Activations autograd keeps for backward, one sample, fp32, with the run's checkpointing setting."""
    recompute_bytes: int = 0
    """Gradient checkpointing: saved bytes of the largest checkpointed block, rebuilt during backward."""
    batch: int = 1
    mixed_precision: str = "no"
    teacher_dtype: str = "float32"
    optimizers: int = 1
    extra_optimizer_params: Optional[int] = None
    """Parameters each optimizer after the first covers (bilevel ``official``: the upper method's subset, e.g.
    cross-attention only with ``upper_train_method=xattn``); None: every trainable parameter."""
    vartheta: bool = False
    ema: bool = False
    teacher_dtype_fixed: bool = False
    """The command needs the teacher in fp32 (bilevel), so bf16 teacher is not an option to suggest."""
    overhead: float = 0.10

    def __post_init__(self) -> None:
        if self.mixed_precision not in _PRECISION_FACTOR:
            raise ConfigError(f"mixed_precision must be one of {sorted(_PRECISION_FACTOR)}, "
                              f"got {self.mixed_precision!r}")
        if self.teacher_dtype not in _DTYPE_BYTES:
            raise ConfigError(f"teacher_dtype must be one of {sorted(_DTYPE_BYTES)}, got {self.teacher_dtype!r}")
        if self.batch < 1 or self.optimizers < 0 or self.overhead < 0:
            raise ConfigError("batch must be >= 1, optimizers >= 0 and overhead >= 0")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per component of one training step on one device (``total`` includes the margin)."""

    weights: int
    grads: int
    optimizer: int
    teacher: int
    frozen: int
    vartheta: int
    ema: int
    activations: int
    margin: int

    @property
    def total(self) -> int:
        """Bytes of every part together."""
        return sum(getattr(self, f.name) for f in fields(self))

    def rows(self) -> list[tuple[str, float]]:
        """(component, GiB) rows, then the total."""
        return [(f.name, getattr(self, f.name) / GB) for f in fields(self)] + [("total", self.total / GB)]


def estimate(m: MemoryInputs) -> MemoryEstimate:
    """The arithmetic of the module docstring."""
    act = int(m.batch * m.saved_bytes_per_sample * _PRECISION_FACTOR[m.mixed_precision]
              + m.recompute_bytes * _PRECISION_FACTOR[m.mixed_precision])
    extra = m.trainable_params if m.extra_optimizer_params is None else m.extra_optimizer_params
    optimizer = 8 * (m.trainable_params + (m.optimizers - 1) * extra) if m.optimizers else 0
    parts = {"weights": 4 * m.student_params, "grads": 4 * m.trainable_params, "optimizer": optimizer,
             "teacher": _DTYPE_BYTES[m.teacher_dtype] * m.teacher_params, "frozen": 4 * m.frozen_params,
             "vartheta": 16 * m.trainable_params if m.vartheta else 0,
             "ema": 4 * m.student_params if m.ema else 0, "activations": act}
    return MemoryEstimate(**parts, margin=int(m.overhead * sum(parts.values())))


# ----------------------------------------------------------------------------------------- fixes and refusal
def _candidates(m: MemoryInputs, checkpointed: MemoryInputs | None) -> list[tuple[str, MemoryInputs]]:
    """Single changes that lower the estimate, in the order we suggest them."""
    out = []
    if checkpointed is not None:
        out.append(("train.gradient_checkpointing=true", checkpointed))
    if m.mixed_precision == "no":
        out.append(("train.mixed_precision=bf16", replace(m, mixed_precision="bf16")))
    if m.teacher_dtype == "float32" and m.teacher_params and not m.teacher_dtype_fixed:
        out.append(("train.teacher_dtype=bfloat16", replace(m, teacher_dtype="bfloat16")))
    if m.vartheta:
        out.append(("track_vartheta=false", replace(m, vartheta=False)))
    if m.ema:
        out.append(("train.ema_decay=null", replace(m, ema=False)))
    if m.batch > 1:
        half = max(1, m.batch // 2)
        out.append((f"train.micro_batch_size={half} with train.grad_accum_steps x{m.batch // half}",
                    replace(m, batch=half)))
    return out


def suggest_fixes(m: MemoryInputs, capacity: int, checkpointed: MemoryInputs | None = None) -> list[str]:
    """Option sets that bring the estimate under ``capacity``: each single change that fits alone, else the
    cumulative set in suggestion order (empty when even all of them together do not fit)."""
    singles = [name for name, alt in _candidates(m, checkpointed) if estimate(alt).total <= capacity]
    if singles:
        return singles
    cur, names = m, []
    while True:
        cands = _candidates(cur, checkpointed if not names or "gradient_checkpointing" not in names[0] else None)
        cands = [(n, a) for n, a in cands if n not in names and estimate(a).total < estimate(cur).total]
        if not cands:
            return []
        name, cur = cands[0]
        names.append(name)
        if estimate(cur).total <= capacity:
            return [" + ".join(names)]


def device_capacity(device: str | torch.device) -> tuple[int, str]:
    """(bytes usable by this process, description): PRUNEFIT_MEMORY_LIMIT_GB when set, else a CUDA device's
    total memory, or on the CPU the memory available now plus what this process already holds."""
    limit = os.environ.get("PRUNEFIT_MEMORY_LIMIT_GB")
    if limit:  # a smaller budget than the device (a shared GPU, a planned target device)
        return int(float(limit) * GB), f"{device} (PRUNEFIT_MEMORY_LIMIT_GB={limit})"
    dev = torch.device(device)
    if dev.type == "cuda":
        _, total = torch.cuda.mem_get_info(dev)
        return int(total), f"{dev} ({total / GB:.0f} GiB)"
    avail = rss = 0
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        avail = info.get("MemAvailable", 0)
        with open(f"/proc/{os.getpid()}/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: no check
        return 0, "cpu (unknown memory)"
    return avail + rss, f"cpu ({(avail + rss) / GB:.0f} GiB available)"


def check_fits(what: str, m: MemoryInputs, capacity: int, where: str,
               checkpointed: MemoryInputs | None = None) -> MemoryEstimate:
    """Raise a ConfigError naming the fix when ``m`` does not fit ``capacity`` bytes (0 = unknown: no check)."""
    est = estimate(m)
    if capacity <= 0 or est.total <= capacity or os.environ.get("PRUNEFIT_MEMORY_CHECK", "1") == "0":
        return est
    fixes = suggest_fixes(m, capacity, checkpointed)
    hint = ("; it fits with " + " or ".join(fixes)) if fixes else "; no single option fits: use a larger device"
    need = f"{est.total / GB:.1f} GiB" if est.total >= GB else f"{est.total / 2**20:.0f} MiB"
    raise ConfigError(f"{what} needs about {need} on {where}{hint} "
                      "(PRUNEFIT_MEMORY_CHECK=0 skips this check)")


# ----------------------------------------------------------------------------------------- activation profile
@dataclass(frozen=True)
class ActivationProfile:
    """Saved bytes per sample (fp32) at ``latent`` x ``latent``, without and with gradient checkpointing."""

    latent: int
    plain: int
    checkpointed: int
    recompute: int


def _saved_bytes(unet, latent: int, text_length: int) -> tuple[int, int]:
    """(saved bytes of one forward, the largest share of one resnet / transformer unit), batch 1."""
    params = {id(p) for p in unet.parameters()}
    total, unit, per_unit = [0], [None], {}

    def pack(t: torch.Tensor):
        """Count a tensor saved for backward (not a parameter) toward the total and the current unit; returns it
        unchanged."""
        base = t._base if t._base is not None else t
        if id(t) not in params and id(base) not in params:
            total[0] += t.numel() * t.element_size()
            if unit[0] is not None:
                per_unit[unit[0]] = per_unit.get(unit[0], 0) + t.numel() * t.element_size()
        return t

    def enter(name):
        """A hook that marks unit ``name`` (None: outside any unit) as the one running."""
        return lambda *_: unit.__setitem__(0, name)

    handles = []
    for name, mod in unet.named_modules():
        if type(mod).__name__ in ("ResnetBlock2D", "Transformer2DModel"):
            handles += [mod.register_forward_pre_hook(enter(name)), mod.register_forward_hook(enter(None))]
    p = next(unet.parameters())
    x = torch.zeros(1, unet.config.in_channels, latent, latent, device=p.device, dtype=p.dtype)
    text = torch.zeros(1, text_length, unet.config.cross_attention_dim, device=p.device, dtype=p.dtype)
    t = torch.zeros(1, device=p.device, dtype=torch.long)
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unet(x, t, text)
    finally:
        for h in handles:
            h.remove()
    return total[0], max(per_unit.values(), default=0)


def extrapolate(at_a: int, at_b: int, a: int, b: int, latent: int) -> int:
    """Bytes at ``latent`` from bytes at latents ``a`` < ``b``, linear in the latent pixel count."""
    return int(at_a + (at_b - at_a) / (b * b - a * a) * (latent * latent - a * a))


def activation_profile(unet, latent: int, text_length: int = 77, small: tuple[int, int] = (8, 16)) -> ActivationProfile:
    """Measure ``unet``'s saved activations at two small latents and extrapolate to ``latent`` (see module doc).

    Runs four tiny forwards with gradients on the UNet's device; restores its checkpointing and train flags."""
    was_training, was_gc = unet.training, bool(getattr(unet, "is_gradient_checkpointing", False))
    flags = [p.requires_grad for p in unet.parameters()]
    unet.train().requires_grad_(True)
    a, b = small
    try:
        unet.disable_gradient_checkpointing()
        (pa, ua), (pb, ub) = _saved_bytes(unet, a, text_length), _saved_bytes(unet, b, text_length)
        unet.enable_gradient_checkpointing()
        (ca, _), (cb, _) = _saved_bytes(unet, a, text_length), _saved_bytes(unet, b, text_length)
    finally:
        unet.enable_gradient_checkpointing() if was_gc else unet.disable_gradient_checkpointing()
        unet.train(was_training)
        for p, f in zip(unet.parameters(), flags):
            p.requires_grad_(f)
    return ActivationProfile(latent, extrapolate(pa, pb, a, b, latent), extrapolate(ca, cb, a, b, latent),
                             recompute=extrapolate(ua, ub, a, b, latent))


def n_params(module, trainable: bool = False) -> int:
    """Number of parameters of ``module`` (only those requiring grad when ``trainable``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def check_training_memory(what: str, student, comps, train, resolution: int, device: str | torch.device,
                          optimizers: int = 1, vartheta: bool = False, extra_optimizer_params: Optional[int] = None,
                          teacher_dtype_fixed: bool = False) -> MemoryEstimate:
    """Refuse up front (ConfigError naming the fix) when a ``train`` config cannot fit ``device``.

    ``student`` is the model being trained, ``comps`` the loaded components (its UNet is the teacher; VAE and
    text encoder are resident), ``train`` a TrainConfig; ``optimizers`` is 2 for bilevel's official preset, whose
    second optimizer covers ``extra_optimizer_params`` parameters (None: all trainable ones)."""
    capacity, where = device_capacity(device)
    latent = resolution // comps.vae_scale_factor
    prof = activation_profile(student, latent, comps.tokenizer.model_max_length)
    gc = bool(train.gradient_checkpointing)
    base = MemoryInputs(
        student_params=n_params(student), trainable_params=n_params(student, trainable=True) or n_params(student),
        teacher_params=n_params(comps.unet), frozen_params=n_params(comps.vae) + n_params(comps.text_encoder),
        saved_bytes_per_sample=prof.checkpointed if gc else prof.plain, recompute_bytes=prof.recompute if gc else 0,
        batch=train.micro_batch_size, mixed_precision=train.mixed_precision, teacher_dtype=train.teacher_dtype,
        optimizers=optimizers, extra_optimizer_params=extra_optimizer_params, vartheta=vartheta,
        ema=bool(train.ema_decay), teacher_dtype_fixed=teacher_dtype_fixed)
    ckpt = None if gc else replace(base, saved_bytes_per_sample=prof.checkpointed, recompute_bytes=prof.recompute)
    return check_fits(what, base, capacity, where, checkpointed=ckpt)
