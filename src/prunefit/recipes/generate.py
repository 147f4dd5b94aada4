"""``prunefit generate``: load a model, read prompts, write images, manifest, grid and resolved config.

Under `accelerate launch` / torchrun every process loads the model and makes its share of the prompts; rank 0
writes the shared files (resolved config, merged manifest, grid) and the folder equals a one-process run's."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import GenerateConfig
from prunefit.data.prompts import inline_prompts, read_prompt_file
from prunefit.errors import ConfigError, OutputError
from prunefit.generation.ranks import current_ranks
from prunefit.generation.routed import generate_routed
from prunefit.generation.sample import GenerationResult, generate_run, prepare_output_dir, sampling_settings
from prunefit.models.components import load_components
from prunefit.pruning import routing
from prunefit.pruning.resolve import check_inputs
from prunefit.utils.lock import output_lock

# Settings that must match when a run folder is reused; prompts may be added, nothing else may change.
_RUN_KEYS = ("model", "expert", "experts", "seed", "dtype", "sampler")


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
    check_inputs(model=None if cfg.experts else cfg.model, expert=cfg.expert, experts=cfg.experts)
    out = Path(cfg.output_dir)
    _check_same_run(cfg, out)
    with output_lock(out):
        prepare_output_dir(out)
        if cfg.experts:
            return _generate_routed(cfg, records, out)
        return _generate(cfg, records, out)


def _generate(cfg: GenerateConfig, records, out: Path) -> GenerationResult:
    components = load_components(cfg.model, cfg.dtype, cfg.device)
    expert_id = None
    if cfg.expert:
        from prunefit.pruning.expert import load_expert

        unet, info = load_expert(cfg.expert, components.unet.config, components.unet.dtype)
        components = components.with_unet(unet.to(cfg.device), f"{components.source}+expert:{Path(cfg.expert).name}")
        expert_id = info.expert_id
    if current_ranks(cfg.device).main:
        save_resolved_config(cfg, out)
    return generate_run(components, records, cfg.sampler, cfg.seed, out, device=cfg.device,
                        grid_max_images=cfg.grid_max_images, expert=expert_id)


def _generate_routed(cfg: GenerateConfig, records, out: Path) -> GenerationResult:
    """Route prompts with the APTP router, then generate each expert's prompts in batches with that expert."""
    prune_dir = Path(cfg.experts)
    components, router, encoder, _ = routing.load_routing(prune_dir, cfg.device, cfg.dtype)
    ids = routing.assign(router, encoder, records)  # CPU embeddings and router: every rank routes alike
    if current_ranks(cfg.device).main:
        save_resolved_config(cfg, out)
    return generate_routed(components, records, ids, lambda k: routing.expert_unet(prune_dir, k, components),
                           cfg.sampler, cfg.seed, out, device=cfg.device, grid_max_images=cfg.grid_max_images,
                           tag=prune_dir.name)
