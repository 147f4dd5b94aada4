"""Training checkpoints: atomic folders holding the model, every optimizer, EMA, step counters and RNG.

``step-<N>/``: model.safetensors, optimizer-<phase>.pt (loaded with weights_only=True), scaler-<phase>.pt
(fp16 loss scalers), ema.safetensors (the EMA's shadow weights by parameter name), rng.safetensors and state.json
(global step, each phase's step, the EMA's EMAModel counters under "ema"; LR schedules are pure functions of the
phase step, and data positions are derived from it, so nothing else is needed to continue exactly).
A folder is written under a temporary name and renamed when complete: a run killed mid-write leaves
the previous checkpoint as the latest. The last ``keep`` checkpoints are kept. Everything is read onto
the CPU first and then copied to where the run holds it, so a run resumes on other devices or ranks.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from prunefit.errors import PrunefitError
from prunefit.utils.faults import fault_pause
from prunefit.utils.io import atomic_folder

PREFIX = "step-"


class CheckpointError(PrunefitError):
    """A checkpoint is missing, corrupt or does not match the run."""


def checkpoint_dirs(root: Path) -> list[Path]:
    """The complete checkpoints (``step-*`` folders with a state.json) under ``root``/checkpoints, oldest first."""
    d = Path(root) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "state.json").is_file())


def latest_checkpoint(root: Path) -> Optional[Path]:
    """The newest complete checkpoint under ``root``, or None."""
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, phases, ema: Optional[dict] = None,
                    keep: int = 2, extra: Optional[dict] = None, model_state: Optional[dict] = None) -> Path:
    """Write ``step-<step>/`` atomically; ``model_state`` is the model's full state dict where the caller gathered
    it (every rank takes part in that under sharding), else ``model.state_dict()``."""
    final = Path(root) / "checkpoints" / f"{PREFIX}{step:08d}"
    with atomic_folder(final, replace=True) as tmp:
        state_dict = model.state_dict() if model_state is None else model_state
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
        fault_pause("CHECKPOINT", step)  # kill tests: a half-written checkpoint folder
        for ph in phases:
            torch.save(ph.optimizer.state_dict(), tmp / f"optimizer-{ph.name}.pt")
            if getattr(ph, "scaler", None) is not None:
                torch.save(ph.scaler.state_dict(), tmp / f"scaler-{ph.name}.pt")
        if ema is not None:
            save_file({k: v.contiguous().cpu() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {"step": step, "phase_steps": {ph.name: ph.step for ph in phases},
                 "python_rng": repr(random.getstate()), "numpy_rng": np.random.get_state()[1].tolist()[:4],
                 **(extra or {})}
        (tmp / "state.json").write_text(json.dumps(state))
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, phases, ema: Optional[dict] = None) -> dict:
    """Restore ``model``, optimizers, phase steps and EMA from ``path``; returns state.json."""
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({str(exc).splitlines()[0][:120]})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match this model ({str(exc).splitlines()[0][:160]}); "
                              "resume with the same expert and config") from None
    for ph in phases:
        f = path / f"optimizer-{ph.name}.pt"
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} has no optimizer state for phase {ph.name!r}")
        try:
            # on the CPU first: load_state_dict moves each state tensor to its parameter's device
            ph.optimizer.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
            scaler = path / f"scaler-{ph.name}.pt"
            if getattr(ph, "scaler", None) is not None and scaler.is_file():
                ph.scaler.load_state_dict(torch.load(scaler, map_location="cpu", weights_only=True))
        except Exception as exc:  # weights_only refuses pickled code objects; anything else is corruption
            raise CheckpointError(f"refusing to load {f}: not a plain tensor file ({type(exc).__name__}); "
                                  "only checkpoints written by prunefit are accepted") from None
        ph.step = int(state["phase_steps"][ph.name])
    if ema is not None and (path / "ema.safetensors").is_file():
        where = {k: p.device for k, p in model.named_parameters()}  # the shadow lives beside its parameter
        ema.update({k: v.to(where.get(k, v.device)) for k, v in load_file(str(path / "ema.safetensors"),
                                                                           device="cpu").items()})
    torch.set_rng_state(load_file(str(path / "rng.safetensors"), device="cpu")["torch"])
    return state
