"""Experiment stages: folders keyed by a hash of their settings, and the commands that fill them (prune, erase).

A stage lives in ``<root>/<name>-<hash>/`` with its settings in ``spec.json``, so a finished stage is reused only
by the same settings and a changed setting computes a new folder beside the old one. Archived stages keep their
keys: settings added later stay out of the hash at their neutral values (``ADDED_SETTINGS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from prunefit.config.schema import PruneConfig
from prunefit.experiments.common.protocol import EraseKnobs, method_section
from prunefit.recipes import erase, prune
from prunefit.utils.io import atomic_write_json


def concept_slug(concept: str) -> str:
    """A concept's folder name in experiment outputs ("Claude Dots" -> "claude-dots")."""
    return concept.lower().replace(" ", "-").replace("'", "")


ADDED_SETTINGS = {"esd": {"retain_weight": 0.0, "retain_prompts": [], "retain_xt": "concept",
                          "concept_vocabulary": "all"},
                  "advunlearn": {"concept_vocabulary": "all"},
                  "train": {"allow_tf32": True, "cudnn_benchmark": True, "lr_scheduler": "constant_with_warmup"},
                  "data": {"num_workers": 2, "pin_memory": True, "split": "train", "image_column": "image",
                           "caption_column": "text", "toy_shapes": [], "toy_colours": [], "toy_backgrounds": [],
                           "toy_size": 0}}
"""Settings added to a section after stages were archived (docs/results/pareto_cells): at these values, which leave
the method as it was, they stay out of a stage's key, so the archived stages keep their folders."""


UNKEYED_SETTINGS = {"data": ("num_workers", "pin_memory"), "train": ("report_to",)}
"""Settings that never change a stage's result (the data loader's workers give bit-identical batches: test_data_loader;
the trackers only watch) and so stay out of its key at any value."""


def _keyed(spec: Any) -> Any:
    """``spec`` without the ``ADDED_SETTINGS`` that are at their neutral values (in sections of those names)."""
    if not isinstance(spec, dict):
        return spec
    out = {}
    for k, v in spec.items():
        v = _keyed(v)
        if k in ADDED_SETTINGS and isinstance(v, dict):
            v = {kk: vv for kk, vv in v.items() if ADDED_SETTINGS[k].get(kk, object()) != vv
                 and kk not in UNKEYED_SETTINGS.get(k, ())}
        out[k] = v
    return out


def stage_key(spec: dict) -> str:
    """A short, stable hash of a stage's resolved settings (its folder name suffix)."""
    return hashlib.sha256(json.dumps(_keyed(spec), sort_keys=True, default=str).encode()).hexdigest()[:10]


def stage_dir(root: Path, name: str, spec: dict) -> Path:
    """``root/<name>-<hash>/`` with the settings in ``spec.json``: a stage is reused only by the same settings."""
    d = root / f"{name}-{stage_key(spec)}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "spec.json").is_file():
        atomic_write_json(d / "spec.json", spec, indent=1, sort_keys=True, default=str)
    return d


def pruned_once(out: Path, message: str, log, **settings) -> Path:
    """Expert 0 of a ``prunefit prune`` run into ``out`` with ``settings`` (no evaluation prompts), pruning only
    when ``out`` holds no finished run: an experiment's starting student."""
    if not (out / "prune_summary.json").is_file():
        log(message)
        prune.main(dataclasses.replace(PruneConfig(), output_dir=str(out), eval_prompts=0, **settings))
    return out / "experts" / "expert-0"


def run_erase(method: str, concept: str, model: str, student: Optional[Path], out: Path, knobs: EraseKnobs,
              seed: int = 0, device: str = "auto", train_method: Optional[str] = None) -> Path:
    """``prunefit erase`` of one concept with an experiment's budgets; a finished run is reused, an
    interrupted one resumed. ``train_method`` overrides the ESD / AdvUnlearn parameter subset."""
    done = out / ("expert" if student else "pipeline")
    if (out / "erase_summary.json").is_file():
        return done
    from prunefit.config.sections import build
    from prunefit.removal.config import EraseConfig, RemovalSection
    from prunefit.removal.registry import get_method

    section = method_section(get_method(method).config_cls, method, concept, model, knobs, train_method)
    cfg = build(EraseConfig, model=model, student=str(student) if student else None, output_dir=str(out), seed=seed,
                device=device, removal=RemovalSection(method=method, concepts=[concept]), **{method: section},
                resume="latest" if (out / "checkpoints").is_dir() else None)
    return erase.main(cfg).model_path

