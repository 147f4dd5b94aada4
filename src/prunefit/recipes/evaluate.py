"""``prunefit evaluate``: run registered metrics over a generation run and merge them into results.json;
``prunefit evaluate fid-ref``: compute and cache FID reference statistics for an image folder.

Under `accelerate launch` / torchrun the metrics run on rank 0 only, which writes results.json; the other ranks
check the run, wait for it and return the same document. (A metric's per-image work could be shared with
``generation.ranks.Ranks.map``, but none of the built-in metrics is split yet: evaluation is seconds to minutes
next to generation's hours, and a split FID must gather features before its statistics.)"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from prunefit.config.sections import with_sections
from prunefit.errors import ConfigError
from prunefit.evaluation import fid as fidlib
from prunefit.evaluation.configs import FidConfig
from prunefit.evaluation.context import EvalContext
from prunefit.evaluation.registry import get_metric, metric_sections
from prunefit.evaluation.results import check_results_target, merge_results
from prunefit.generation.ranks import current_ranks
from prunefit.utils.device import resolve_device


@dataclass
class EvaluateConfig:
    """``prunefit evaluate``: metrics over a generation run folder -> results.json. Each registered metric's
    settings are a section (``fid.*``, ``clip_score.*``, ``nudity.*``, ``artist.*``, ``toyworld.*``, ``cost.*``, a
    plugin's) added by ``registry_schema``."""

    run_dir: str = ""
    """Folder written by `prunefit generate` (manifest.jsonl + images/)."""
    metrics: list[str] = field(default_factory=lambda: ["toyworld"])
    output: Optional[str] = None
    """results.json path; None = <run_dir>/results.json."""
    device: str = "auto"
    """auto (default): accelerate's device under `accelerate launch`, else cuda when a GPU is visible, else cpu;
    or cpu, cuda, cuda:N. resolved_config.yaml records what it became (prunefit.utils.device)."""

    @classmethod
    def registry_schema(cls) -> type:
        """This config class with a section per registered metric added."""
        return with_sections(cls, metric_sections())

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        if not self.metrics:
            raise ConfigError("metrics must name at least one metric")

    def section(self, entry) -> Any:
        """``entry``'s settings: this config's section, or the entry's defaults where it has none."""
        if entry.config_cls is None:
            return None
        found = getattr(self, entry.section, None)
        return found if found is not None else entry.config_cls()


@dataclass
class EvaluateResult:
    results_path: Path
    document: dict[str, Any]
    """The merged results.json: a header (run, model, generation settings) and one entry per metric."""
    evaluated: list[str] = field(default_factory=list)
    """The metrics this call computed (the document may hold earlier ones too)."""

    def lines(self) -> list[str]:
        """Each evaluated metric's values, and the results file, for the console."""
        out = []
        for name in self.evaluated:
            values = self.document["metrics"][name]["values"]
            out.append(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        return out + [f"results: {self.results_path}"]


def main(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate ``cfg.metrics`` on ``cfg.run_dir`` and merge them into its results.json."""
    if not cfg.run_dir:
        raise ConfigError("evaluate needs a run folder: prunefit evaluate RUN_DIR (or run_dir=...)")
    entries = [get_metric(m) for m in cfg.metrics]  # unknown names fail before any work
    ctx = EvalContext.from_run(cfg.run_dir, cfg.device)
    first = ctx.rows[0]
    header = {"run_dir": str(ctx.run_dir), "model": first.get("model"), "n": len(ctx.rows),
              "generation": first.get("settings"), "seeds": "per prompt, see manifest.jsonl"}
    out = Path(cfg.output) if cfg.output else ctx.run_dir / "results.json"
    check_results_target(out, header)  # a corrupt file or another run's results fail before any work
    if any(e.kind == "images" for e in entries):
        ctx.images()  # every listed image must exist and decode before any model is loaded
    ranks = current_ranks(cfg.device)
    if not ranks.main:  # rank 0 measures and writes; this rank returns its document
        ranks.barrier()
        return EvaluateResult(out, json.loads(out.read_text()), [e.name for e in entries])
    results = {}
    for entry in tqdm(entries, desc="metrics", unit="metric", disable=len(entries) < 2):
        results[entry.name] = entry.fn(ctx, cfg.section(entry))
    doc = merge_results(out, header, results)
    ranks.barrier()
    return EvaluateResult(out, doc, list(results))


def fid_reference(images: str, cfg: FidConfig, output: str | None = None) -> Path:
    """Compute reference statistics of ``images`` under ``cfg``'s protocol (mode, features, N, resolution, resize,
    weights) and save them with it (safetensors); the default file name carries the protocol's key."""
    net = fidlib.feature_network(cfg)
    paths = fidlib.reference_paths(images, cfg.reference_n)
    out = Path(output) if output else \
        Path(images) / f"fid-stats-{cfg.mode}-{cfg.features}-{fidlib.stats_key(paths, net.protocol)}.safetensors"
    fidlib.compute_reference_stats(images, net, cfg, out, progress=lambda r: tqdm(r, desc="fid-ref", unit="batch"))
    return out


def fid_reference_lines(images: str, cfg: FidConfig, output: str | None = None) -> list[str]:
    """``prunefit evaluate fid-ref``: save the statistics (``fid_reference``); the console lines name the file and
    the protocol it was made under."""
    out = fid_reference(images, cfg, output)
    _, _, meta = fidlib.load_stats(out)
    proto = meta["protocol"]
    return [f"FID reference statistics ({cfg.mode}, {cfg.features}, N={meta['n']}) -> {out}",
            f"protocol: resolution {proto['resolution']}, resize {proto['resize']}; weights {proto['weights']}"]
