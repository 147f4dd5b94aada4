"""Resolve a config's ``device`` and ``mixed_precision`` settings to what this process will really use.

``device: auto`` (every command's default) becomes accelerate's device under ``accelerate launch`` / ``torchrun``
(``cuda:<LOCAL_RANK>`` on a GPU machine, ``cpu`` otherwise), else ``cuda:<current>`` when a GPU is visible, else
``cpu``. An explicit ``cpu``, ``cuda`` or ``cuda:N`` is checked against the machine, so a config that names a GPU
fails in one line before any model is loaded. The resolved value is what ``resolved_config.yaml`` records.

``mixed_precision: auto`` becomes ``bf16`` on a CUDA device that supports it and ``no`` elsewhere.
"""

from __future__ import annotations

import os

import torch

from prunefit.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def launched_rank() -> int | None:
    """This process's local rank under ``accelerate launch`` / ``torchrun`` (``LOCAL_RANK``), or None."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.strip().lstrip("-").isdigit() else None


def resolve_device(spec: str, key: str = "device") -> str:
    """``spec`` (auto | cpu | cuda | cuda:N | mps) -> a concrete device string (``cpu``, ``cuda:0``, ...)."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        rank = launched_rank()
        index = rank % torch.cuda.device_count() if rank is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{key} must be {DEVICE_CHOICES}, got {spec!r}") from None
    if dev.type in ("cpu", "meta"):  # meta: shapes without data (the device tests' stand-in for a GPU)
        return dev.type
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={spec} but no CUDA GPU is visible to this torch "
                              f"({torch.__version__}); use {key}=auto or {key}=cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{key}={spec} but this machine has {count} visible GPU(s) (cuda:0..cuda:{count - 1})")
        if dev.index is None:
            rank = launched_rank()
            return f"cuda:{rank % count if rank is not None else torch.cuda.current_device()}"
        return f"cuda:{dev.index}"
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{key}={spec} but MPS is not available here; use {key}=auto or {key}=cpu")
        return "mps"
    raise ConfigError(f"{key} must be {DEVICE_CHOICES}, got {spec!r}")


def as_device(spec: "str | torch.device") -> "str | torch.device":
    """A runtime context's device: a ``torch.device`` as given (tests put contexts on ``meta``), a string resolved as
    a config's ``device`` is (``auto`` by default everywhere)."""
    return spec if isinstance(spec, torch.device) else resolve_device(spec)


def resolve_mixed_precision(value: str, device: str, key: str = "train.mixed_precision") -> str:
    """``value`` (auto | no | fp16 | bf16) for a run on ``device`` -> no | fp16 | bf16 (auto: bf16 on CUDA with
    bf16 support, else no)."""
    if value != "auto":
        if value == "fp16" and not str(device).startswith("cuda"):
            raise ConfigError(f"{key}=fp16 needs a CUDA device (this run is on {device}); use {key}=bf16, auto or no")
        return value
    if str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"
