"""The public Python API: the CLI's commands as functions with keyword settings and named results.

Each function takes the command's settings as keyword arguments (a nested section as a dict or as dotted
keys: ``train={"lr": 1e-4}`` or ``**{"train.lr": 1e-4}``), validates them exactly as the CLI does (same
defaults, same one-line errors), runs the recipe and returns its named result::

    import prunefit
    experts = prunefit.prune(output_dir="runs/p", num_experts=4, target=0.8, steps=300)
    tuned = prunefit.finetune(experts.experts[0], output_dir="runs/ft", train={"max_steps": 400, "lr": 1e-4})
    safe = prunefit.erase(tuned.model_path, method="uce", concepts=["Claude Dots"], output_dir="runs/uce")
    both = prunefit.bilevel(experts.experts[0], concepts=["skull"], output_dir="runs/bl", preset="paper")
    run = prunefit.generate(both.model_path, prompts=["a red star on a black background"], output_dir="runs/g")
    scores = prunefit.evaluate(run.output_dir, metrics=["toyworld"])

A model argument is ``"toyworld"``, ``"tiny"``, a diffusers pipeline folder, a hub id, an expert folder (then
its base model is read from its ``expert.json``) or an experiment row folder; ``generate`` also takes a ``prunefit
prune`` folder (routed experts). ``pruning.resolve.resolve_model`` says which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from prunefit.config.load import load_config
from prunefit.errors import ConfigError


def _overrides(settings: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in settings.items():
        if isinstance(value, dict):
            out += _overrides(value, f"{prefix}{key}.")
        elif value is not None:
            out.append(f"{prefix}{key}={json.dumps(str(value) if isinstance(value, Path) else value)}")
    return out


def _config(schema, settings: dict[str, Any]):
    """``schema`` from keyword settings, validated like the CLI's ``key=value`` overrides."""
    return load_config(schema, [], _overrides(settings))


def _model_and_student(model: str | Path) -> tuple[str, Optional[str]]:
    """(base model, expert folder or None) of a model argument."""
    from prunefit.pruning.resolve import resolve_model

    ref = resolve_model(model).one_model()
    return ref.base, ref.expert


def load(model: str | Path = "toyworld", *, device: str = "auto", dtype: str = "float32"):
    """The components (tokenizer, text encoder, VAE, UNet, scheduler) of a model on ``device`` (auto: the GPU when
    one is visible, as every command); an expert folder gives its base model's components with the expert as UNet."""
    from prunefit.pruning.resolve import model_components, resolve_model
    from prunefit.utils.device import resolve_device

    return model_components(resolve_model(model), device=resolve_device(device), dtype=dtype)


def prune(model: str | Path = "toyworld", *, output_dir: str | Path, **settings):
    """APTP (or ``method="magnitude"|"random"``): experts + router -> ``PruneResult``."""
    from prunefit.config.schema import PruneConfig
    from prunefit.recipes import prune as recipe

    return recipe.main(_config(PruneConfig, {"model": str(model), "output_dir": str(output_dir), **settings}))


def finetune(student: Optional[str | Path] = None, *, output_dir: str | Path, model: Optional[str] = None,
             **settings):
    """Distil ``student`` (an expert folder; None = a copy of the teacher) from the teacher -> ``FinetuneResult``."""
    from prunefit.config.schema import FinetuneConfig
    from prunefit.recipes import finetune as recipe

    source, expert = _model_and_student(student) if student else ("toyworld", None)
    return recipe.main(_config(FinetuneConfig, {"model": model or source, "student": expert or student,
                                                "output_dir": str(output_dir), **settings}))


def erase(model: str | Path, *, method: str, concepts: Sequence[str], output_dir: str | Path, **settings):
    """Remove ``concepts`` from a dense model or an expert with a registered method -> ``EraseResult``."""
    from prunefit.recipes import erase as recipe
    from prunefit.removal.config import EraseConfig

    base, student = _model_and_student(model)
    removal = {"method": method, "concepts": list(concepts), **settings.pop("removal", {})}
    return recipe.main(_config(EraseConfig, {"model": base, "student": student, "output_dir": str(output_dir),
                                             "removal": removal, **settings}))


def bilevel(student: str | Path, *, concepts: Sequence[str], output_dir: str | Path, **settings):
    """Distil an expert while suppressing ``concepts`` (the paper's method) -> ``BilevelResult``."""
    from prunefit.recipes import bilevel as recipe
    from prunefit.removal.bilevel import BilevelConfig

    base, expert = _model_and_student(student)
    if expert is None:
        raise ConfigError(f"bilevel needs an expert folder (expert.json) as student, got {student}")
    return recipe.main(_config(BilevelConfig, {"model": base, "student": expert, "output_dir": str(output_dir),
                                               "concepts": list(concepts), **settings}))


def generate(model: str | Path = "toyworld", *, output_dir: str | Path, prompts: Sequence[str] = (),
             prompt_file: Optional[str | Path] = None, experts: Optional[str | Path] = None, **settings):
    """Images for prompts with a model, an expert, or routed experts (``experts=`` a prune folder)."""
    from prunefit.config.schema import GenerateConfig
    from prunefit.pruning.resolve import resolve_model
    from prunefit.recipes import generate as recipe

    ref = resolve_model(model)
    experts = experts or ref.prune_dir
    return recipe.main(_config(GenerateConfig, {
        "model": ref.base, "expert": ref.expert, "experts": str(experts) if experts else None,
        "prompts": list(prompts), "prompt_file": str(prompt_file) if prompt_file else None,
        "output_dir": str(output_dir), **settings}))


def evaluate(run_dir: str | Path, *, metrics: Sequence[str], **settings):
    """Registered metrics over a generation run, merged into its results.json -> ``EvaluateResult``."""
    from prunefit.recipes import evaluate as recipe
    from prunefit.recipes.evaluate import EvaluateConfig

    return recipe.main(_config(EvaluateConfig, {"run_dir": str(run_dir), "metrics": list(metrics), **settings}))
