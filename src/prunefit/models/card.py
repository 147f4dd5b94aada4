"""Model cards: ``write_card(folder)`` writes a Hugging Face ``README.md`` describing what a prunefit folder holds.

The card is read off the folder itself: ``resolved_config.yaml``, the run's ``*_summary.json``, ``expert.json`` files
(``expert.json``, ``expert/``, ``experts/*/``, an export's ``unet/``), ``results.json`` and ``report.md``. YAML front
matter as the Hub reads it (``library_name``, ``base_model``, ``license``, ``tags``, ``pipeline_tag``), then what
was pruned or erased, the method's settings, and the metrics measured with their protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

CARD = "README.md"
KINDS = {"bilevel_summary.json": "bilevel", "erase_summary.json": "erase", "finetune_summary.json": "finetune",
         "prune_summary.json": "prune"}
"""A run's summary file -> the command that wrote the folder (first match wins)."""
TITLES = {"bilevel": "Pruned and concept-suppressed (bilevel)", "erase": "Concept-erased", "finetune": "Fine-tuned",
          "prune": "Pruned experts", "export": "Pruned", "expert": "Pruned expert", "experiment": "Experiment",
          "model": "Model"}
_TRAIN_KEYS = ("max_steps", "micro_batch_size", "grad_accum_steps", "lr", "warmup_steps", "weight_decay",
               "ema_decay", "mixed_precision")
_SKIP_KEYS = {"output_dir", "resume", "device", "cache_dir", "model", "student"}


def base_license(base: str) -> str:
    """The licence of base model ``base``: the toy world and tiny models are prunefit's own (Apache-2.0); a local
    folder's card front matter if it names one; SD 1.x ids ``creativeml-openrail-m``; SD 2.x / XL ``openrail++``;
    else ``other``."""
    if base in ("toyworld", "tiny", "tiny-v"):
        return "apache-2.0"  # trained (or randomly built) by prunefit itself, shipped under the package's licence
    own = _front_matter(Path(base).expanduser() / CARD).get("license") if Path(base).expanduser().is_dir() else None
    if own:
        return str(own)
    b = base.lower().replace("_", "-")
    if any(k in b for k in ("stable-diffusion-v1", "stable-diffusion-1", "sd-v1", "sd15", "sd-1-5", "sd1.")):
        return "creativeml-openrail-m"
    if any(k in b for k in ("stable-diffusion-2", "stable-diffusion-xl", "sd-v2", "sd21", "sd2.", "sdxl")):
        return "openrail++"
    return "other"


def _front_matter(path: Path) -> dict:
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    try:
        doc = yaml.safe_load(text[4:text.index("\n---", 4)])
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def gather(folder: Path) -> dict[str, Any]:
    """What a card says about ``folder``: kind, config, summary, experts (expert.json documents), results, report."""
    folder = Path(folder)
    cfg = {}
    if (folder / "resolved_config.yaml").is_file():
        cfg = yaml.safe_load((folder / "resolved_config.yaml").read_text()) or {}
    kind = next((k for f, k in KINDS.items() if (folder / f).is_file()), None)
    summary = _json(folder / f"{kind}_summary.json") if kind else None
    experts = [d for p in [folder / "expert.json", folder / "unet" / "expert.json", folder / "expert" / "expert.json",
                           *sorted((folder / "experts").glob("*/expert.json"))] if (d := _json(p))]
    if kind is None:
        kind = ("export" if (folder / "unet" / "pruned_unet.py").is_file() else "expert" if experts
                else "experiment" if list(folder.glob("**/report.md")) else "model")
    base = str(cfg.get("model") or (experts[0]["source_model"] if experts else "") or "unknown")
    return {"kind": kind, "config": cfg, "summary": summary or {}, "experts": experts, "base": base,
            "results": _json(folder / "results.json"), "reports": sorted(folder.glob("**/report.md"))}


def _erased(info: dict) -> list:
    s, cfg = info["summary"], info["config"]
    extra = {k: v for e in info["experts"] for k, v in (e.get("extra") or {}).items()}
    return list(s.get("concepts") or (cfg.get("removal") or {}).get("concepts") or cfg.get("concepts")
                or extra.get("erased") or extra.get("suppressed") or [])


def front_matter(info: dict) -> dict:
    """The card's YAML header (Hub metadata)."""
    tags = ["prunefit", "stable-diffusion", "text-to-image"]
    if info["experts"]:
        tags.append("pruned")
    if info["kind"] in ("erase", "bilevel") or _erased(info):
        tags.append("concept-erasure")
    base = info["base"]
    return {"library_name": "diffusers", "base_model": Path(base).name if base.startswith(("/", ".", "~")) else base,
            "license": base_license(base), "tags": tags, "pipeline_tag": "text-to-image"}


def _expert_lines(e: dict) -> list[str]:
    kept = e.get("kept") or {}
    depth = [k for k in kept if k.endswith(".depth")]
    dropped = [k for k in depth if not kept[k]]
    extra = e.get("extra") or {}
    return [f"- expert {e.get('expert_id', '')}: MAC ratio {e.get('mac_ratio', float('nan')):.3f} of the base UNet "
            f"({e.get('mac_protocol', {}).get('resolution', '?')} px, text length "
            f"{e.get('mac_protocol', {}).get('text_length', '?')}); method {extra.get('method', '?')}, target "
            f"{extra.get('target', '?')}; {len(kept) - len(depth)} width groups, {len(dropped)} of {len(depth)} "
            f"gated blocks removed; width multiple {e.get('width_multiple', 1)}"]


def _settings(info: dict) -> dict:
    cfg, kind = info["config"], info["kind"]
    out = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list)) and k not in _SKIP_KEYS}
    sections = {"prune": ["router", "loss"], "finetune": ["loss"], "bilevel": ["loss", cfg.get("upper_method")],
                "erase": ["removal", (cfg.get("removal") or {}).get("method")]}.get(kind, [])
    out.update({s: cfg[s] for s in sections if s and isinstance(cfg.get(s), dict)})
    if isinstance(cfg.get("train"), dict) and kind in ("finetune", "bilevel", "erase") and \
            info["summary"].get("kind") != "edit":  # an edit method (UCE, ConceptPrune) trains nothing
        out["train"] = {k: cfg["train"][k] for k in _TRAIN_KEYS if k in cfg["train"]}
    return out


def _metrics(results: dict) -> list[str]:
    out = ["## Metrics", "", f"Measured on `{results.get('model', '?')}`, n = {results.get('n', '?')}.", "",
           "| metric | values |", "|---|---|"]
    for name, m in results.get("metrics", {}).items():
        vals = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m["values"].items())
        out.append(f"| {name} | {vals} |")
    out += ["", "Protocols (the numbers are comparable only under the same protocol):", ""]
    for name, m in results.get("metrics", {}).items():
        out.append(f"- **{name}**: `{json.dumps(m.get('protocol'), default=str)}`")
    return out + [""]


def render(info: dict) -> str:
    """The card's text: front matter, description, settings, metrics, and how to load the model."""
    head = yaml.safe_dump(front_matter(info), sort_keys=False)
    made = f" (`prunefit {info['kind']}`)" if info["kind"] in KINDS.values() or info["kind"] == "export" else ""
    lines = ["---", head.rstrip(), "---", "", f"# {TITLES[info['kind']]}: {info['base']}", "",
             f"Made with prunefit{made} from base model `{info['base']}`.", ""]
    if info["experts"]:
        lines += ["## What was pruned", "", *[x for e in info["experts"] for x in _expert_lines(e)], ""]
    if _erased(info):
        lines += ["## What was erased", "", f"Concepts: {', '.join(map(str, _erased(info)))}.", ""]
    settings = _settings(info)
    if settings or info["summary"]:
        dump = yaml.safe_dump({**settings, **({"summary": info["summary"]} if info["summary"] else {})},
                              sort_keys=False, default_flow_style=None)
        lines += ["## Method and settings", "", "```yaml", dump.rstrip(), "```", ""]
    if info["results"]:
        lines += _metrics(info["results"])
    if info["reports"]:
        lines += ["## Reports", "", *[f"- `{p}`" for p in info["reports"]], ""]
    if info["kind"] == "export":
        lines += ["## Use", "", "```python", "from diffusers import DiffusionPipeline", "",
                  "pipe = DiffusionPipeline.from_pretrained(PATH_OR_REPO_ID, trust_remote_code=True)", "```", "",
                  "`trust_remote_code=True` runs `unet/pruned_unet.py` (torch + diffusers only), which rebuilds the "
                  "pruned layer widths recorded in `unet/config.json`.", ""]
    return "\n".join(lines)


def write_card(folder: str | Path) -> Path:
    """Write ``folder/README.md`` (replacing an earlier card) from what the folder holds, and the same card into its
    ``pipeline/`` (a dense run's diffusers folder, the part worth pushing); returns the card's path."""
    folder = Path(folder)
    text = render(gather(folder))
    (folder / CARD).write_text(text)
    if (folder / "pipeline" / "model_index.json").is_file():
        (folder / "pipeline" / CARD).write_text(text)
    return folder / CARD
