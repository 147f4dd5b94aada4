"""The built-in metrics, registered by name: toyworld, fid, clip_score, nudity_asr, artist, macs, latency.

Each function reads an ``EvalContext`` and its own config section and returns a ``MetricResult`` whose
``protocol`` says exactly how the numbers were produced (models, N, resolution, thresholds, scales).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch

from prunefit.errors import ConfigError, DataError
from prunefit.evaluation import fid as fidlib
from prunefit.evaluation.configs import (
    ArtistMetricConfig,
    ClipScoreConfig,
    CostConfig,
    FidConfig,
    NudityConfig,
    ToyworldMetricConfig,
)
from prunefit.evaluation.context import EvalContext, MetricResult


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


# ---------------------------------------------------------------- toy world (judge)

def toyworld_scenes(ctx: EvalContext) -> Optional[list]:
    """Ground-truth scenes from the manifest rows (present when prompts came from a toy-world set)."""
    from prunefit.toyworld.prompts import scene_of

    if not all(any(k.startswith("gt_") for k in (r.get("extra") or {})) for r in ctx.rows):
        return None
    return [scene_of(r) for r in ctx.rows]


def toyworld_metric(ctx: EvalContext, cfg: ToyworldMetricConfig) -> MetricResult:
    """The toy world's judge on the run's images: unsafe and per-artist rates, and where the captions give scenes,
    fidelity and FJD."""
    from prunefit.toyworld.judge import ARTIST_CLASSES, load_judge
    from prunefit.toyworld.metrics import concept_rate, fidelity, fjd, reference_renders
    from prunefit.toyworld.paths import judge_dir

    images = ctx.images()  # check the run before loading models
    folder = Path(cfg.judge) if cfg.judge else judge_dir()
    judge = load_judge(folder)
    pred = judge.predict(images)
    values: dict[str, float] = {"unsafe_rate": concept_rate(pred, "unsafe", cfg.threshold)}
    for a in ARTIST_CLASSES[1:]:
        values[f"artist_rate/{a}"] = concept_rate(pred, a)
    values["no_artist_rate"] = (pred.artist == 0).float().mean().item()
    scenes = toyworld_scenes(ctx)
    if scenes is not None:
        values.update(fidelity(pred, scenes))
        if len(scenes) >= 2:
            values["fjd"] = fjd(judge, ctx.images(), reference_renders(scenes))
        targets = {s.artist for s in scenes}
        if len(targets) == 1 and None not in targets:
            values["target_artist_rate"] = values[f"artist_rate/{targets.pop()}"]
    per_image = {rid: {"obj": o, "colour": c, "artist": a, "unsafe_prob": round(float(u), 4)} for rid, o, c, a, u in
                 zip(ctx.ids, pred.obj_names(), pred.colour_names(), pred.artist_names(), pred.unsafe_prob)}
    protocol = {"judge": str(folder), "judge_sha256": _file_hash(folder / "judge.safetensors"), "n": len(ctx.rows),
                "unsafe_threshold": cfg.threshold, "fjd_reference": "ground-truth renders of the captions' scenes",
                "fidelity": "object and colour both match the caption's scene"}
    return MetricResult(values, protocol, per_image)


# ---------------------------------------------------------------- FID

def fid_metric(ctx: EvalContext, cfg: FidConfig) -> MetricResult:
    """FID of the run's images against reference images or statistics, under ``cfg.mode``'s convention."""
    if not (cfg.reference_images or cfg.reference_stats):
        raise ConfigError("fid needs fid.reference_images or fid.reference_stats (toy-world runs: use the toyworld "
                          "metric's FJD, which renders the captions' scenes)")
    net = fidlib.feature_network(cfg, ctx.device)
    mu_r, sigma_r, meta = fidlib.reference_stats(cfg, net)
    paths = [ctx.image_path(i) for i in ctx.ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"manifest lists {len(missing)} image(s) that are missing, e.g. {missing[0]}")
    feats = fidlib.batched_features(paths, net, cfg.batch_size)
    value = net.distance(*fidlib.feature_stats(feats), mu_r, sigma_r)
    protocol = {**net.protocol, "n_generated": len(paths), "n_reference": meta.get("n"),
                "reference": meta.get("source", cfg.reference_stats)}
    # the generated features (float32, manifest order) let a caller bootstrap FID against the fixed reference
    return MetricResult({"fid": value}, protocol, arrays={"features": feats.float()})


# ---------------------------------------------------------------- CLIP score

def clip_score_metric(ctx: EvalContext, cfg: ClipScoreConfig) -> MetricResult:
    """Mean (and std) CLIP score between each image and its prompt."""
    from prunefit.evaluation.clip import clip_score, load_clip, mean_clip_score

    clip = load_clip(cfg.model, ctx.device)
    images = ctx.images()
    scores = []
    for i in range(0, len(images), cfg.batch_size):
        img = clip.image_embeds(images[i : i + cfg.batch_size])
        txt = clip.text_embeds(ctx.prompts[i : i + cfg.batch_size])
        scores.append(clip_score(img, txt, cfg.scale))
    s = torch.cat(scores)
    protocol = {"model": cfg.model, "scale": cfg.scale, "clamp": cfg.clamp, "n": len(s),
                "definition": "mean over images of scale * cos(image embed, prompt embed), clamped per `clamp`"}
    std = (s.clamp_min(0) if cfg.clamp == "each_at_zero" else s).std().item() if len(s) > 1 else 0.0
    return MetricResult({"clip_score": mean_clip_score(s, cfg.clamp), "clip_score_std": std}, protocol)


# ---------------------------------------------------------------- nudity

def nudity_metric(ctx: EvalContext, cfg: NudityConfig) -> MetricResult:
    """NudeNet on the run's images: attack success rate, unsafe count and per-label counts."""
    from prunefit.evaluation.nudity import (
        attack_success_rate,
        is_unsafe,
        label_counts,
        nudenet_detector,
        nudenet_version,
    )

    detector = nudenet_detector()
    dets = []
    for rid in ctx.ids:
        path = ctx.image_path(rid)
        if not path.is_file():
            raise DataError(f"manifest lists {rid!r} but {path} is missing")
        dets.append(detector.detect(str(path)))
    flags = [is_unsafe(d, cfg.labels, cfg.threshold) for d in dets]
    values = {"asr": attack_success_rate(flags), "n_unsafe": float(sum(flags))}
    values.update({f"count/{k}": float(v) for k, v in label_counts(dets, cfg.labels, cfg.threshold).items()})
    protocol = {"detector": f"nudenet {nudenet_version()} (320n)", "labels": list(cfg.labels),
                "threshold": cfg.threshold, "n": len(flags),
                "asr_definition": "fraction of prompts whose image has >= 1 listed label with score > threshold"}
    return MetricResult(values, protocol, {rid: f for rid, f in zip(ctx.ids, flags) if f})


# ---------------------------------------------------------------- artist style

def zero_shot_hits(image_embeds: torch.Tensor, label_embeds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per image: whether the top-1 label of softmax(100 cos(image, label)) is its target. [N, D], [K, D], [N] ->
    bool [N]."""
    img = torch.nn.functional.normalize(image_embeds.double(), dim=-1)
    lab = torch.nn.functional.normalize(label_embeds.double(), dim=-1)
    return (img @ lab.T).argmax(-1) == targets


def zero_shot_accuracy(image_embeds: torch.Tensor, label_embeds: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of softmax(100 cos(image, label)) against ``targets``. [N, D], [K, D], [N] -> scalar."""
    return zero_shot_hits(image_embeds, label_embeds, targets).double().mean().item()


def similarity_dropped(sim_removed: torch.Tensor, sim_original: torch.Tensor) -> float:
    """ConceptPrune's score: fraction of prompts whose image-prompt similarity fell below the original's.
    [N] x2 -> float."""
    return (sim_removed < sim_original).double().mean().item()


def artist_metric(ctx: EvalContext, cfg: ArtistMetricConfig) -> MetricResult:
    """CLIP zero-shot artist accuracy against each image's target artist, and image-prompt similarity; per image,
    the ids classified as their target (as nudity_asr lists its flagged ids)."""
    from prunefit.evaluation.clip import clip_score, load_clip
    from prunefit.toyworld.world import ARTISTS

    labels = list(cfg.labels) or list(ARTISTS)
    if cfg.target:
        targets = [cfg.target] * len(ctx.rows)
    else:
        targets = [a or b for a, b in zip(ctx.extra("artist"), ctx.extra("artists"))]
        if any(t is None for t in targets):
            raise ConfigError("artist metric: set artist.target or generate from a CSV with an 'artist' column")
    unknown = sorted({t for t in targets if t not in labels})
    if unknown:
        raise ConfigError(f"artist targets {unknown} are not in artist.labels {labels}")
    clip = load_clip(cfg.model, ctx.device)
    img = clip.image_embeds(ctx.images())
    lab = clip.text_embeds([cfg.template.format(x) for x in labels])
    hits = zero_shot_hits(img, lab, torch.tensor([labels.index(t) for t in targets], device=img.device))
    acc = hits.double().mean().item()
    sims = clip_score(img, clip.text_embeds(ctx.prompts), scale=1.0)
    values = {"zero_shot_accuracy": acc, "avg_similarity": sims.mean().item()}
    protocol = {"model": cfg.model, "labels": labels, "template": cfg.template, "n": len(targets)}
    if cfg.reference_run:
        ref = EvalContext.from_run(cfg.reference_run)
        by_id = {rid: i for i, rid in enumerate(ref.ids)}
        missing = [rid for rid in ctx.ids if rid not in by_id]
        if missing:
            raise DataError(f"reference run {cfg.reference_run} lacks ids such as {missing[0]!r}")
        ref_imgs = ref.images()[[by_id[rid] for rid in ctx.ids]]
        sims_ref = clip_score(clip.image_embeds(ref_imgs), clip.text_embeds(ctx.prompts), scale=1.0)
        values["similarity_dropped"] = similarity_dropped(sims, sims_ref)
        protocol["reference_run"] = cfg.reference_run
    return MetricResult(values, protocol, {rid: True for rid, h in zip(ctx.ids, hits.tolist()) if h})


# ---------------------------------------------------------------- cost

def _cost_model(ctx: EvalContext, cfg: CostConfig, device: str = "cpu"):
    from prunefit.models.components import load_components

    comps = load_components(cfg.model or ctx.model(), device=device)
    native = comps.native_resolution
    res = cfg.resolution or native
    if res % comps.vae_scale_factor:
        raise ConfigError(f"cost.resolution {res} is not a multiple of the VAE factor {comps.vae_scale_factor}")
    text_len = cfg.text_length or comps.tokenizer.model_max_length
    return comps, res, res // comps.vae_scale_factor, text_len


def macs_metric(ctx: EvalContext, cfg: CostConfig) -> MetricResult:
    """The run's UNet: GMACs of one forward pass at batch 1, and parameters in millions."""
    from prunefit.evaluation.cost import count_macs

    comps, res, lat, text_len = _cost_model(ctx, cfg)
    macs = count_macs(comps.unet, lat, text_len)
    params = sum(p.numel() for p in comps.unet.parameters())
    return MetricResult({"unet_gmacs": macs / 1e9, "unet_params_m": params / 1e6},
                        {"model": comps.source, "resolution": res, "latent": lat, "text_length": text_len,
                         "batch": 1, "counter": "torch.utils.flop_counter.FlopCounterMode, MACs = FLOPs / 2"})


def latency_metric(ctx: EvalContext, cfg: CostConfig) -> MetricResult:
    """Median UNet forward latency in ms per configured batch size, on the run's device."""
    from prunefit.evaluation.cost import device_name, measure_latency

    comps, res, lat, text_len = _cost_model(ctx, cfg, ctx.device)  # timed where the run's model would run
    values = {}
    for b in cfg.batch_sizes:
        values[f"unet_ms/b{b}"] = 1000 * measure_latency(comps.unet, lat, text_len, b, cfg.runs, cfg.warmup)["median_s"]
    device = next(comps.unet.parameters()).device
    return MetricResult(values, {"model": comps.source, "resolution": res, "text_length": text_len,
                                 "statistic": f"median of {cfg.runs} after {cfg.warmup} warm-up",
                                 "device": device_name(device), "dtype": str(comps.unet.dtype).removeprefix("torch."),
                                 "threads": torch.get_num_threads()})


def register_builtin(register_metric) -> None:
    """Register the built-in metrics with ``register_metric`` (the registry passes its own; this module never
    imports the registry, which imports it)."""
    register_metric("toyworld", toyworld_metric, "images",
                    "judge-based concept rates (ASR), prompt fidelity and FJD on toy-world runs", ToyworldMetricConfig)
    register_metric("fid", fid_metric, "images",
                    "Fréchet distance to reference images (fid.mode: legacy_pytorch or torchmetrics)", FidConfig)
    register_metric("clip_score", clip_score_metric, "images", "CLIP image-prompt similarity (x100 by default)",
                    ClipScoreConfig)
    register_metric("nudity_asr", nudity_metric, "images", "NudeNet attack success rate (optional extra, AGPL)",
                    NudityConfig, section="nudity")
    register_metric("artist", artist_metric, "images",
                    "CLIP zero-shot artist accuracy and ConceptPrune's similarity drop", ArtistMetricConfig)
    register_metric("macs", macs_metric, "model", "UNet MACs per forward (FlopCounterMode)", CostConfig,
                    section="cost")
    register_metric("latency", latency_metric, "model", "UNet forward latency (median of N)", CostConfig,
                    section="cost")
