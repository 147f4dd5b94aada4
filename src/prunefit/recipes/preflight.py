"""Check a recipe's inputs before anything is created or loaded: ``check_inputs(model=..., student=...)``.

Every check is cheap (file headers and JSON, no weights) and raises the reader's own one-line error, so a bad
path fails before an output folder exists and before a progress bar or loading line is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from prunefit.errors import ConfigError, ModelLoadError


def check_inputs(model: Optional[str] = None, student: Optional[str] = None, expert: Optional[str] = None,
                 experts: Optional[str] = None, cache_dir: Optional[str] = None) -> None:
    """``model``: a loadable model spec; ``student`` / ``expert``: an expert folder; ``experts``: a
    ``prunefit prune`` output (router + experts); ``cache_dir``: a latent cache made with ``model``."""
    from prunefit.models.components import check_model_spec

    if model is not None:
        check_model_spec(model)
    for key, path in (("student", student), ("expert", expert)):
        if path:
            _check_expert(key, path)
    if experts:
        _check_prune_output(experts)
    if cache_dir:
        from prunefit.data.cache import read_cache_meta

        read_cache_meta(cache_dir, model)


def _check_expert(key: str, path: str) -> None:
    from prunefit.pruning.expert import check_expert_folder

    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"{key} folder not found: {path} (pass an expert folder, e.g. "
                             "runs/prune/experts/expert-0)")
    check_expert_folder(p)


def _check_prune_output(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"experts folder not found: {path} (pass the output_dir of `prunefit prune`)")
    if not (p / "router").is_dir():
        raise ConfigError(f"{path} has no router/: routed generation needs an APTP prune output "
                          "(a magnitude/random prune has no router; use --expert with one of its experts)")
    experts = sorted((p / "experts").glob("expert-*")) if (p / "experts").is_dir() else []
    if not experts:
        raise ModelLoadError(f"{path} has no experts/expert-*; is it a finished `prunefit prune` run?")
    for e in experts:
        _check_expert("expert", str(e))
