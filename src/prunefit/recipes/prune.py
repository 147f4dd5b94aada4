"""``prunefit prune``: train the APTP router and materialize its K experts (or a magnitude / random baseline)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import PruneConfig, TrainConfig
from prunefit.data.datasets import build_data
from prunefit.errors import OutputError
from prunefit.models.card import write_card
from prunefit.models.components import Components, load_components
from prunefit.pruning.baselines import magnitude_scores, prune_to_target, random_scores
from prunefit.pruning.expert import expert_info, save_expert
from prunefit.pruning.macs import MacModel, mac_model
from prunefit.pruning.materialize import materialize
from prunefit.pruning.objective import RouterObjective
from prunefit.pruning.resolve import check_inputs
from prunefit.pruning.router import Router
from prunefit.pruning.spec import GateSpec, gate_spec, round_widths
from prunefit.training.loop import adamw_phase
from prunefit.training.runtime import (
    fit,
    make_accelerator,
    report_effective_batch,
    resolve_resume,
    run_device,
    run_settings,
)
from prunefit.utils.io import mark_done
from prunefit.utils.lock import output_lock
from prunefit.utils.optim import warmup_cosine


@dataclass
class PruneResult:
    output_dir: Path
    experts: list[Path]
    mac_ratios: list[float]
    summary: dict

    def lines(self) -> list[str]:
        """What the run did, for the console: each expert's MAC ratio, toy-val routing loads, summary file."""
        out = [f"{p}: MAC ratio {r:.3f}" for p, r in zip(self.experts, self.mac_ratios)]
        if self.summary.get("routing_toy_val"):
            out.append(f"toy-val routing loads: {self.summary['routing_toy_val']['loads']}")
        return out + [f"summary: {self.output_dir / 'prune_summary.json'}"]


def router_train_config(cfg: PruneConfig) -> TrainConfig:
    """The shared runtime's settings for router training (checkpoints, logging, resume)."""
    return TrainConfig(max_steps=cfg.steps, micro_batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=0,
                       checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, mixed_precision="no")


def train_router(cfg: PruneConfig, comps: Components, spec: GateSpec, macs: MacModel, log, accelerator,
                 resume: Optional[Path]) -> Router:
    """APTP router training on the shared runtime (data parallel over processes, exact resume), then
    calibration of the routing on held-out training captions (main process)."""
    from prunefit.pruning.encoder import SentenceEncoder

    torch.manual_seed(cfg.seed)
    device = run_device(accelerator)
    encoder = SentenceEncoder(cfg.router.encoder, str(device))
    router = Router(spec, encoder.dim, cfg.router, num_experts=cfg.num_experts).to(device)
    data = build_data(cfg.data, cfg.data.resolution or comps.native_resolution, cfg.seed)
    objective = RouterObjective(cfg, comps, spec, macs, router, encoder, data,
                                distributed=accelerator.num_processes > 1)
    warm = max(1, cfg.steps // 20)
    phase = adamw_phase("router", objective, list(router.parameters()), lr=cfg.lr, model=router,
                        lr_factor=lambda step: warmup_cosine(step, cfg.steps, warm, floor=1.0),
                        micro_batch=cfg.batch_size)
    report_effective_batch(accelerator, cfg.batch_size, 1, log)
    fit([phase], router, router_train_config(cfg), Path(cfg.output_dir), accelerator, resume)
    router.eval()
    if accelerator.is_main_process:
        calib_caps = data.captions(10**8, 1024)  # held-out training captions
        loads = router.calibrate(encoder(calib_caps).to(device))
        log(f"router calibrated on {len(calib_caps)} training captions: loads {loads.tolist()}")
    router.encoder_name = encoder.name
    router._encoder = encoder
    return router


def baseline_codes(cfg: PruneConfig, comps: Components, spec: GateSpec, macs: MacModel) -> torch.Tensor:
    """The magnitude or random baseline's architecture at the target MAC ratio, [1, D]."""
    scores = magnitude_scores(comps.unet, spec) if cfg.method == "magnitude" else random_scores(spec, cfg.seed)
    return prune_to_target(spec, macs, scores, cfg.target, cfg.width_multiple).unsqueeze(0)


def export_experts(cfg: PruneConfig, comps: Components, spec: GateSpec, macs: MacModel, codes: torch.Tensor,
                   mac_protocol: dict) -> tuple[list[Path], list[float]]:
    """Materialize each architecture of ``codes`` [K, D] from the pretrained UNet and save it as an expert; returns the
    expert folders and their MAC ratios."""
    paths, ratios = [], []
    for k, arch in enumerate(codes):
        unet = copy.deepcopy(comps.unet)  # pretrained weights first, then slice
        kept = materialize(unet, spec, arch)
        ratio = float(macs.ratio(arch.unsqueeze(0)))
        info = expert_info(comps.unet, spec, arch, comps.source, kept, ratio, mac_protocol, expert_id=k,
                           extra={"method": cfg.method, "target": cfg.target}, width_multiple=cfg.width_multiple)
        paths.append(save_expert(unet, info, Path(cfg.output_dir) / "experts" / f"expert-{k}"))
        ratios.append(ratio)
    return paths, ratios


def _toyworld_eval(cfg: PruneConfig, comps: Components, experts: list[Path]) -> Optional[dict]:
    if cfg.eval_prompts <= 0 or comps.source != "toyworld":
        return None
    from prunefit.config.schema import SamplerConfig
    from prunefit.generation.toyworld_quality import measure_set, read_rows
    from prunefit.pruning.expert import load_expert
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.paths import judge_dir, prompts_dir

    judge = load_judge(judge_dir())
    rows = read_rows(prompts_dir() / "toy-val.jsonl", cfg.eval_prompts)
    sampler = SamplerConfig(batch_size=50)
    out = {"teacher": measure_set(comps, judge, "toy-val", rows, sampler)}
    for p in experts:
        unet, _ = load_expert(p, comps.unet.config)
        out[p.name] = measure_set(comps.with_unet(unet), judge, "toy-val", rows, sampler)
    return out


def route_toyval(router: Router, n: int = 500) -> Optional[dict]:
    """Expert loads of the router over the first ``n`` toy-val prompts (None without the toy world's prompts)."""
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import read_rows

    path = prompts_dir() / "toy-val.jsonl"
    if not path.is_file():
        return None
    prompts = [r["prompt"] for r in read_rows(path, n)]
    idx = router.route(router._encoder(prompts))
    return {"prompts": len(prompts), "loads": torch.bincount(idx, minlength=router.num_experts).tolist()}


def main(cfg: PruneConfig, log=print) -> Optional[PruneResult]:
    """Prune; under several processes the router trains data-parallel and the main process exports
    (other processes return None)."""
    out = Path(cfg.output_dir)
    if (out / "prune_summary.json").is_file():
        raise OutputError(f"{out} already holds a finished prune run; use a new output_dir (nothing was overwritten)")
    check_inputs(model=cfg.model)
    with output_lock(out):
        return _prune(cfg, out, log)


def _prune(cfg: PruneConfig, out: Path, log) -> Optional[PruneResult]:
    resume = resolve_resume(out, cfg.resume)
    accelerator = make_accelerator(router_train_config(cfg), cfg.device)
    if accelerator.is_main_process:
        save_resolved_config(cfg, out)
    t0 = time.time()
    comps = load_components(cfg.model, device=str(run_device(accelerator)))  # one device for every component
    spec = gate_spec(comps.unet, cfg.router.ffn_groups)
    res = cfg.data.resolution or comps.native_resolution
    text_len = cfg.mac_text_length or comps.tokenizer.model_max_length
    macs = mac_model(comps.unet, spec, res // comps.vae_scale_factor, text_len)
    mac_protocol = {"resolution": res, "text_length": text_len, "counter": "analytic (matches FlopCounterMode)",
                    "teacher_gmacs": macs.total / 1e9}
    summary: dict = {"method": cfg.method, "target": cfg.target, "gates": {"width_groups": len(spec.width),
                     "width_entries": spec.width_dim, "depth": spec.depth_dim}, "mac_protocol": mac_protocol}
    router = train_router(cfg, comps, spec, macs, log, accelerator, resume) if cfg.method == "aptp" else None
    if not accelerator.is_main_process:  # other processes only helped train the router
        return None
    if router is not None:
        codes = round_widths(spec, router.expert_codes(), router.codebook, cfg.width_multiple)  # extras: top logits
        router.save(out / "router", {"encoder": router.encoder_name, "source_model": comps.source,
                                     "spec_dim": spec.dim, "ffn_groups": cfg.router.ffn_groups})
        summary["routing_toy_val"] = route_toyval(router) if comps.source == "toyworld" else None
    else:
        codes = baseline_codes(cfg, comps, spec, macs)
    experts, ratios = export_experts(cfg, comps, spec, macs, codes, mac_protocol)
    summary["experts"] = [{"path": str(p), "mac_ratio": r} for p, r in zip(experts, ratios)]
    summary["mean_mac_ratio"] = sum(ratios) / len(ratios)
    summary["judge_toy_val"] = _toyworld_eval(cfg, comps, experts)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["runtime"] = run_settings(accelerator, router_train_config(cfg))
    mark_done(out / "prune_summary.json", summary, indent=1)  # written last: its presence says the run finished
    write_card(out)
    return PruneResult(out, experts, ratios, summary)
