"""Train the toy world's tokenizer, VAE, judge and teacher (resumable stages), then export and measure it.

Stages run in order and each leaves a ``DONE.json`` in ``build_dir/<stage>/``; re-running skips
finished stages and resumes the teacher from its last checkpoint, so a long CPU build can be spread
over several sessions (``teacher_steps`` may be raised between runs to train further). Every random
draw is a function of (seed, step), so a resumed build equals an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from prunefit.config.schema import SamplerConfig, ToyworldBuildConfig
from prunefit.errors import ModelLoadError
from prunefit.generation.toyworld_quality import measure_quality
from prunefit.losses.diffusion import diffusion_target, min_snr_weights, snr, weighted_mse
from prunefit.models.components import DEFAULT_GUIDANCE, read_sidecar, write_sidecar
from prunefit.models.schedulers import sd_training_scheduler_config
from prunefit.models.tiny import build_text_encoder, build_unet, toy_teacher_config
from prunefit.models.tokenizer import trained_bpe_tokenizer
from prunefit.objectives.noise import add_noise
from prunefit.recipes.toyworld_card import write_model_card
from prunefit.toyworld.judge import Judge, judge_accuracy, load_judge, train_judge
from prunefit.toyworld.paths import assets_dir as default_assets_dir
from prunefit.toyworld.prompts import write_prompt_sets
from prunefit.toyworld.teacher import TOY_GUIDANCE
from prunefit.toyworld.world import Scene, caption, render, sample_scene
from prunefit.training.runtime import ema_update
from prunefit.utils.io import atomic_folder, atomic_write_json, mark_done, open_jsonl_append, read_jsonl
from prunefit.utils.optim import warmup_cosine, warmup_cosine_scheduler

TEACHER = toy_teacher_config()
"""The shipped teacher's sizes (``prunefit.toyworld.teacher.TEACHER_SIZES``)."""


def _done(stage_dir: Path) -> Optional[dict]:
    f = stage_dir / "DONE.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _mark_done(stage_dir: Path, info: dict) -> None:
    mark_done(stage_dir / "DONE.json", info, indent=2)


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder into a temporary sibling, then swap it in (never a half-written ``final``)."""
    with atomic_folder(final, replace=True) as tmp:
        write(tmp)


def _scenes_and_images(rng: np.random.Generator, n: int, p_unsafe: float = 0.15) -> tuple[list[Scene], torch.Tensor]:
    scenes = [sample_scene(rng, p_artist=0.5, p_unsafe=p_unsafe) for _ in range(n)]
    x = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return scenes, x


# ---------------------------------------------------------------- stages

def _init_dir(cfg: ToyworldBuildConfig) -> Optional[Path]:
    if cfg.init_from is None:
        return None
    root = default_assets_dir() if cfg.init_from == "toyworld" else Path(cfg.init_from)
    if not (root / "teacher" / "model_index.json").is_file():
        raise ModelLoadError(f"init_from={cfg.init_from!r}: no exported toy world at {root}")
    return root


def build_tokenizer(cfg: ToyworldBuildConfig, out: Path) -> CLIPTokenizer:
    """The toy world's tokenizer: reused when built, copied from the init world, or a BPE tokenizer trained on sampled
    captions."""
    if _done(out):
        return CLIPTokenizer.from_pretrained(out)
    init = _init_dir(cfg)
    if init is not None:
        tok = CLIPTokenizer.from_pretrained(init / "teacher" / "tokenizer")
        tok.save_pretrained(out)
        _mark_done(out, {"vocab": len(tok), "from": str(init)})
        return tok
    rng = np.random.default_rng([cfg.seed, 1])
    corpus = [caption(sample_scene(rng, p_unsafe=0.3), rng) for _ in range(20000)]
    tok = trained_bpe_tokenizer(corpus, cfg.vocab_size, model_max_length=TEACHER.max_text_length)
    tok.save_pretrained(out)
    _mark_done(out, {"vocab": len(tok)})
    return tok


def build_vae(cfg: ToyworldBuildConfig, out: Path) -> AutoencoderKL:
    """The toy world's VAE: reused when built, copied from the init world, or trained on rendered scenes."""
    if _done(out):
        return AutoencoderKL.from_pretrained(out).eval().requires_grad_(False)
    init = _init_dir(cfg)
    if init is not None:
        vae = AutoencoderKL.from_pretrained(init / "teacher" / "vae").eval().requires_grad_(False)
        vae.save_pretrained(out)
        _mark_done(out, {"from": str(init)})
        return vae
    torch.manual_seed(cfg.seed)
    from prunefit.models.tiny import build_vae as make_vae

    vae = make_vae(TEACHER)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = warmup_cosine_scheduler(opt, cfg.vae_steps, max(1, cfg.vae_steps // 20))
    gen = torch.Generator().manual_seed(cfg.seed)
    t0, bar = time.time(), tqdm(range(cfg.vae_steps), desc="vae", unit="step", mininterval=5)
    for step in bar:
        _, x = _scenes_and_images(np.random.default_rng([cfg.seed, 2, step]), cfg.vae_batch_size, p_unsafe=0.3)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD convention: scale latents to unit variance
        _, x = _scenes_and_images(np.random.default_rng([cfg.seed, 3]), 512)
        std = vae.encode(x).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out)
    _mark_done(out, {"seconds": round(time.time() - t0, 1), "latent_std": std})
    return vae


def vae_roundtrip(vae: AutoencoderKL) -> Callable[[torch.Tensor], torch.Tensor]:
    """images [B, 3, H, W] -> the VAE's reconstruction [B, 3, H, W] (posterior mode, decoded)."""
    return lambda x: vae.decode(vae.encode(x).latent_dist.mode()).sample


def build_judge(cfg: ToyworldBuildConfig, out: Path, vae: AutoencoderKL) -> Judge:
    """The toy world's judge: reused when built, copied from the init world, or trained on VAE-roundtripped renders."""
    if _done(out):
        return load_judge(out)
    init = _init_dir(cfg)
    if init is not None and (init / "judge").is_dir():  # the judge must stay the one the world was measured by
        shutil.copytree(init / "judge", out, dirs_exist_ok=True)
        held_out = json.loads((init / "quality.json").read_text())["judge_held_out"]
        _mark_done(out, {"from": str(init), "held_out_accuracy": held_out})
        return load_judge(out)
    t0 = time.time()
    judge = train_judge(cfg.judge_steps, cfg.judge_batch_size, seed=cfg.seed, roundtrip=vae_roundtrip(vae))
    acc = judge_accuracy(judge)
    judge.save(out, {"held_out_accuracy": acc, "steps": cfg.judge_steps})
    _mark_done(out, {"seconds": round(time.time() - t0, 1), "held_out_accuracy": acc})
    return judge


@dataclass
class TeacherState:
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    ema: dict[str, torch.Tensor]
    opt: torch.optim.Optimizer
    step: int
    init_step: int = 0
    """Step of the teacher this build started from (warm-up restarts there, with fresh Adam moments)."""


def _ema_params(state: TeacherState) -> dict[str, torch.Tensor]:
    params = {f"unet.{k}": v for k, v in state.unet.named_parameters()}
    params.update({f"text.{k}": v for k, v in state.text_encoder.named_parameters()})
    return params


def _save_teacher_ckpt(state: TeacherState, ckpt_root: Path, keep: int = 2) -> None:
    def write(d: Path) -> None:
        """Write the teacher checkpoint (EMA weights, EMA state, optimizer, step) into ``d``."""
        save_file({k: v.detach().contiguous() for k, v in _ema_params(state).items()}, str(d / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in state.ema.items()}, str(d / "ema.safetensors"))
        torch.save(state.opt.state_dict(), d / "optimizer.pt")
        (d / "state.json").write_text(json.dumps({"step": state.step, "init_step": state.init_step}))

    ckpt_root.mkdir(parents=True, exist_ok=True)
    _atomic_dir(ckpt_root / f"step-{state.step:07d}", write)
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_teacher_ckpt(state: TeacherState, ckpt_root: Path) -> None:
    ckpts = sorted(ckpt_root.glob("step-*")) if ckpt_root.is_dir() else []
    if not ckpts:
        return
    d = ckpts[-1]
    weights = load_file(str(d / "model.safetensors"))
    with torch.no_grad():
        for k, p in _ema_params(state).items():
            p.copy_(weights[k])
    state.ema = load_file(str(d / "ema.safetensors"))
    state.opt.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
    saved = json.loads((d / "state.json").read_text())
    state.step, state.init_step = saved["step"], saved.get("init_step", 0)


def _init_teacher(state: TeacherState, init: Path) -> None:
    """Start from an exported teacher: its (EMA) weights become the weights and the EMA; its step counts on."""
    unet = UNet2DConditionModel.from_pretrained(init / "teacher" / "unet")
    text = CLIPTextModel.from_pretrained(init / "teacher" / "text_encoder")
    state.unet.load_state_dict(unet.state_dict())
    state.text_encoder.load_state_dict(text.state_dict())
    quality = init / "quality.json"
    state.step = json.loads(quality.read_text()).get("teacher_step", 0) if quality.is_file() else 0
    state.init_step = state.step


def teacher_lr_multiplier(cfg: ToyworldBuildConfig, step: int, init_step: int) -> float:
    """LR multiplier at teacher ``step`` for a build that started at ``init_step`` (warm-up restarts there)."""
    local, total = step - init_step, max(1, cfg.teacher_steps - init_step)
    if cfg.teacher_lr_schedule == "cosine":
        return warmup_cosine(local, total, cfg.teacher_warmup, cfg.teacher_lr_floor)
    return min(1.0, (local + 1) / cfg.teacher_warmup)


def train_teacher(cfg: ToyworldBuildConfig, out: Path, tok: CLIPTokenizer, vae: AutoencoderKL,
                  log: Callable[[str], None] = print) -> TeacherState:
    """Train UNet + text encoder jointly on fresh renders (EMA, min-SNR, caption dropout); resumable."""
    torch.manual_seed(cfg.seed)
    unet, text_encoder = build_unet(TEACHER), build_text_encoder(TEACHER, tok)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.teacher_lr, betas=(0.9, 0.999), weight_decay=1e-2)
    state = TeacherState(unet, text_encoder, {}, opt, 0)
    init = _init_dir(cfg)
    if init is not None and not (out / "checkpoints").is_dir():
        _init_teacher(state, init)
        log(f"teacher: initialized from {init} (step {state.step})")
    state.ema = {k: v.detach().clone() for k, v in _ema_params(state).items()}
    _load_teacher_ckpt(state, out / "checkpoints")
    if state.step:
        log(f"teacher: resumed at step {state.step}")
    noise_sched = DDPMScheduler.from_config(sd_training_scheduler_config("epsilon"))
    acp = noise_sched.alphas_cumprod
    sf = vae.config.scaling_factor
    unet.train()
    text_encoder.train()
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=cfg.teacher_steps, initial=state.step, desc="teacher", unit="step", mininterval=10)
    logf = open_jsonl_append(out / "log.jsonl")
    while state.step < cfg.teacher_steps:
        step = state.step
        rng = np.random.default_rng([cfg.seed, 4, step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        scenes, x = _scenes_and_images(rng, cfg.teacher_batch_size)
        texts = ["" if rng.random() < cfg.caption_dropout else caption(s, rng) for s in scenes]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator=gen) * sf
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x),), generator=gen)
        noisy = add_noise(latents, noise, acp, t)
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        target = diffusion_target("epsilon", latents, noise, acp, t)
        loss = weighted_mse(pred, target, min_snr_weights(snr(acp, t), cfg.min_snr_gamma, "epsilon"))
        for g in opt.param_groups:
            g["lr"] = cfg.teacher_lr * teacher_lr_multiplier(cfg, step, state.init_step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(state.ema, _ema_params(state).items(), cfg.ema_decay, step)
        state.step += 1
        bar.update(1)
        if state.step % 50 == 0:
            value = loss.item()
            bar.set_postfix(loss=f"{value:.4f}")
            logf.write(json.dumps({"step": state.step, "loss": value, "time": time.time()}) + "\n")
            logf.flush()
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.teacher_steps:
            _save_teacher_ckpt(state, out / "checkpoints")
    bar.close()
    logf.close()
    return state


def teacher_pipeline(state: TeacherState, tok: CLIPTokenizer, vae: AutoencoderKL, use_ema: bool = True):
    """The teacher as a stock StableDiffusionPipeline (EMA weights by default)."""
    from diffusers import StableDiffusionPipeline

    unet, text_encoder = build_unet(TEACHER), build_text_encoder(TEACHER, tok)
    src = state.ema if use_ema else {k: v.detach() for k, v in _ema_params(state).items()}
    unet.load_state_dict({k[5:]: v for k, v in src.items() if k.startswith("unet.")})
    text_encoder.load_state_dict({k[5:]: v for k, v in src.items() if k.startswith("text.")}, strict=False)
    scheduler = PNDMScheduler.from_config({**sd_training_scheduler_config("epsilon"), "skip_prk_steps": True})
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tok, unet=unet.eval(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _save_teacher(pipe, folder: Path) -> None:
    from prunefit.toyworld.erase_defaults import toy_method_defaults

    pipe.save_pretrained(folder)
    write_sidecar(folder, TOY_GUIDANCE, toy_method_defaults())


def run_build(cfg: ToyworldBuildConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage, export teacher + judge + prompt sets, measure quality, write the model card."""
    torch.set_num_threads(cfg.threads)
    root = Path(cfg.build_dir)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = build_tokenizer(cfg, root / "tokenizer")
    log(f"tokenizer: {len(tok)} tokens")
    vae = build_vae(cfg, root / "vae")
    log(f"vae: {_done(root / 'vae')}")
    state = train_teacher(cfg, root / "teacher", tok, vae, log)
    judge = build_judge(cfg, root / "judge", vae)
    log(f"judge: {_done(root / 'judge')}")
    pipe = teacher_pipeline(state, tok, vae)
    assets = Path(cfg.export_dir) if cfg.export_dir else default_assets_dir()
    assets.mkdir(parents=True, exist_ok=True)
    _atomic_dir(assets / "teacher", lambda d: _save_teacher(pipe, d))
    _atomic_dir(assets / "judge", lambda d: shutil.copytree(root / "judge", d, dirs_exist_ok=True))
    _atomic_dir(assets / "prompts", lambda d: write_prompt_sets(d, seed=cfg.seed))
    log(f"exported teacher, judge and prompt sets to {assets}")
    quality, quality75 = measure_both(assets, judge, cfg.eval_prompts)
    info = {"config": asdict(cfg), "teacher_step": state.step, "teacher_init_step": state.init_step,
            "guidance_scale": TOY_GUIDANCE, "quality_cfg_7_5": quality75,
            "build_seconds_this_run": round(time.time() - t0, 1),
            "judge_held_out": _done(root / "judge")["held_out_accuracy"], "quality": quality,
            "vae": _done(root / "vae"), "teacher_log": _log_summary(root / "teacher" / "log.jsonl")}
    atomic_write_json(assets / "quality.json", info, indent=2)
    write_model_card(assets, info, TEACHER)
    log(f"model card: {assets / 'MODEL_CARD.md'}")
    return assets


def main(cfg: ToyworldBuildConfig, log: Callable[[str], None] = print) -> list[str]:
    """``prunefit toyworld build``: run the build (``run_build``); the console line says where the world went."""
    return [f"toy world written to {run_build(cfg, log)}"]


def measure_both(assets: Path, judge, n: int) -> tuple[dict, dict]:
    """Judge metrics of an exported teacher at the toy world's default guidance and at SD's 7.5."""
    default = measure_quality(assets / "teacher", judge, assets / "prompts", n=n)
    sd = measure_quality(assets / "teacher", judge, assets / "prompts", n=n,
                         sampler=SamplerConfig(batch_size=50, guidance_scale=DEFAULT_GUIDANCE))
    return default, sd


def remeasure(assets: Optional[Path] = None, n: Optional[int] = None, log: Callable[[str], None] = print) -> Path:
    """Re-measure an exported toy world's quality (both guidance scales) and rewrite quality.json and the card
    (``assets`` None = the shipped world)."""
    assets = Path(assets) if assets else default_assets_dir()
    if not (assets / "quality.json").is_file():
        raise ModelLoadError(f"no exported toy world at {assets} (no quality.json); run `prunefit toyworld build`")
    info = json.loads((assets / "quality.json").read_text())
    n = n or info["config"]["eval_prompts"]
    info["config"]["eval_prompts"] = n
    info["guidance_scale"] = read_sidecar(assets / "teacher").get("default_guidance_scale", DEFAULT_GUIDANCE)
    info["quality"], info["quality_cfg_7_5"] = measure_both(assets, load_judge(assets / "judge"), n)
    atomic_write_json(assets / "quality.json", info, indent=2)
    log(f"quality re-measured on {n} prompts per set")
    return write_model_card(assets, info, TEACHER)


def measure(assets: Optional[Path] = None, n: Optional[int] = None, log: Callable[[str], None] = print) -> list[str]:
    """``prunefit toyworld measure``: re-measure (``remeasure``); the console shows the rewritten model card."""
    return [remeasure(assets, n, log).read_text()]


def _log_summary(path: Path) -> dict:
    """Wall-clock seconds spent on teacher steps (summed over runs) and the last logged loss."""
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    seconds = sum(max(0.0, b["time"] - a["time"]) for a, b in zip(rows, rows[1:]) if b["step"] > a["step"]
                  and b["time"] - a["time"] < 600)
    return {"seconds": round(seconds, 1), "last_loss": rows[-1]["loss"] if rows else math.nan,
            "steps_logged": rows[-1]["step"] if rows else 0}
