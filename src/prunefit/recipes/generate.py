"""``prunefit generate``: load a model, read prompts, write images, manifest, grid and resolved config."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import GenerateConfig
from prunefit.data.prompts import inline_prompts, read_prompt_file
from prunefit.errors import ConfigError, OutputError
from prunefit.generation.sample import GenerationResult, generate_run, prepare_output_dir, sampling_settings
from prunefit.models.components import load_components

# Settings that must match when a run folder is reused; prompts may be added, nothing else may change.
_RUN_KEYS = ("model", "seed", "dtype", "sampler")


def _check_same_run(cfg: GenerateConfig, out: Path) -> None:
    prev_file = out / "resolved_config.yaml"
    if not prev_file.is_file():
        return
    prev = yaml.safe_load(prev_file.read_text()) or {}
    ours = asdict(cfg)
    ours["sampler"] = sampling_settings(cfg.sampler)
    prev["sampler"] = {k: v for k, v in (prev.get("sampler") or {}).items() if k != "batch_size"}
    diff = [k for k in _RUN_KEYS if prev.get(k) != ours[k]]
    if diff:
        raise OutputError(f"{out} holds a run with different {', '.join(diff)}; use a new output_dir "
                          "(nothing was overwritten)")


def main(cfg: GenerateConfig) -> GenerationResult:
    """Run ``prunefit generate`` for ``cfg`` and return what it wrote."""
    if cfg.prompt_file and cfg.prompts:
        raise ConfigError("give prompts inline (prompts / --prompt) or in a file (prompt_file), not both")
    if cfg.prompt_file:
        records = read_prompt_file(cfg.prompt_file, cfg.max_prompts, cfg.prompt_format)
    elif cfg.prompts:
        records = inline_prompts(cfg.prompts, cfg.max_prompts)
    else:
        raise ConfigError("no prompts: pass --prompt TEXT, --prompt-file FILE, or set prompts / prompt_file")
    out = Path(cfg.output_dir)
    prepare_output_dir(out)
    _check_same_run(cfg, out)
    components = load_components(cfg.model, cfg.dtype, cfg.device)
    save_resolved_config(cfg, out)
    return generate_run(components, records, cfg.sampler, cfg.seed, out, device=cfg.device,
                        grid_max_images=cfg.grid_max_images)
