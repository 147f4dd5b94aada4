"""``prunefit erase``: run a registered removal method on a dense model or an expert, then save it."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from prunefit.config.load import save_resolved_config
from prunefit.errors import OutputError
from prunefit.generation.ranks import current_ranks
from prunefit.models.card import write_card
from prunefit.models.components import load_components
from prunefit.pruning.expert import save_student
from prunefit.pruning.resolve import check_inputs, load_student
from prunefit.removal.config import EraseConfig
from prunefit.removal.context import RemovalContext
from prunefit.removal.registry import get_method
from prunefit.training.runtime import fit, make_accelerator, resolve_resume, run_device, run_settings
from prunefit.training.students import apply_speedups
from prunefit.utils.io import mark_done
from prunefit.utils.lock import output_lock


@dataclass
class EraseResult:
    output_dir: Path
    model_path: Path
    info: dict

    def lines(self) -> list[str]:
        """What the run did, for the console: method, concepts, model path."""
        return [f"{self.info['method']} removed {self.info['concepts']} -> {self.model_path}"]


def main(cfg: EraseConfig) -> EraseResult:
    """``prunefit erase``: apply a removal method to the model under an output lock; returns the edited model's path and
    info."""
    entry = get_method(cfg.removal.method)
    mcfg = cfg.method_config()
    out = Path(cfg.output_dir)
    if cfg.resume is None and (out / "erase_summary.json").is_file():
        raise OutputError(f"{out} already holds a finished erase run; use a new output_dir")
    check_inputs(model=cfg.model, student=cfg.student)
    entry.check(mcfg)
    with output_lock(out):
        return _erase(cfg, entry, mcfg, out)


def _erase(cfg: EraseConfig, entry, mcfg, out: Path) -> EraseResult:
    torch.manual_seed(cfg.seed)
    train_cfg = (cfg.train if entry.kind == "edit"
                 else dataclasses.replace(cfg.train, max_steps=mcfg.iterations, lr=mcfg.lr, warmup_steps=0))
    accelerator = make_accelerator(train_cfg, cfg.device)  # first: a launch it refuses fails before any loading
    device = str(run_device(accelerator))  # one device for every component
    comps = load_components(cfg.model, device=device)
    student, expert = load_student(cfg.student, comps)
    student.to(device).eval()
    frozen = comps.unet if cfg.removal.reference == "teacher" else copy.deepcopy(student).requires_grad_(False)
    if entry.kind != "edit":  # the reference's targets stay float32 (as bilevel's)
        apply_speedups(student, frozen, dataclasses.replace(train_cfg, teacher_dtype="float32"))
    ctx = RemovalContext(student, frozen, comps, cfg.seed, device)
    ranks = current_ranks(cfg.device)  # every rank computes the same edit / trains together; rank 0 writes the files
    if ranks.main:
        save_resolved_config(cfg, out)
    info: dict = {"method": entry.name, "kind": entry.kind, "concepts": mcfg.concepts, "reference": entry.reference}
    if entry.kind == "edit":
        result = entry.apply(ctx, mcfg)
        if ranks.main:
            for stem, tensors in result.tensors.items():
                save_file(tensors, str(out / f"{stem}.safetensors"))
        info.update(result.info)
    else:
        phase = entry.build_phase(ctx, mcfg)
        steps = fit([phase], student, train_cfg, out, accelerator, resolve_resume(out, cfg.resume))
        info["steps"] = steps
        info["runtime"] = run_settings(accelerator, train_cfg)
    text_trained = entry.trained_module(mcfg) == "text_encoder"
    student.eval().requires_grad_(False)
    path = out / ("expert" if expert is not None else "pipeline")
    if ranks.main:
        path = save_student(student, expert, comps, out, {"erased": mcfg.concepts, "erase_method": entry.name})
        if text_trained and expert is not None:
            comps.text_encoder.save_pretrained(out / "text_encoder")
        mark_done(out / "erase_summary.json", info, indent=1, default=str)  # it marks the run finished
        write_card(out)
    ranks.barrier()  # every rank returns with the erased model on disk
    return EraseResult(out, path, info)
