"""Write the toy world's MODEL_CARD.md from the build's measured numbers."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from prunefit.generation.toyworld_quality import summary_targets
from prunefit.models.tiny import TinySDConfig


def write_model_card(assets: Path, info: dict, sizes: TinySDConfig) -> Path:
    """Write ``assets/MODEL_CARD.md`` from ``info`` (quality.json's content) and the teacher's ``sizes``."""
    cfg, q = info["config"], info["quality"]
    lines = [
        "# prunefit toy world: teacher and judge",
        "",
        "A real, tiny text-to-image diffusion model (a stock diffusers `StableDiffusionPipeline`) trained on",
        "prunefit's procedurally generated world, and the judge network that measures it. Built by",
        "`prunefit toyworld build`; everything below was measured by that command.",
        "",
        "## Teacher",
        "",
        f"- UNet2DConditionModel, SD 2.x blocks: channels {list(sizes.unet_channels)}, cross-attention at "
        f"levels {[i for i, a in enumerate(sizes.attention_levels) if a]} (0 = 16x16) and the mid block, "
        f"{sizes.layers_per_block} layers per block, {sizes.attention_heads} heads, GEGLU "
        f"feed-forward, linear projections, cross-attention dim {sizes.cross_attention_dim}, "
        f"{sizes.latent_size}x{sizes.latent_size}x4 latents.",
        f"- CLIPTextModel: {sizes.text_layers} layers, width {sizes.text_hidden}, "
        f"{sizes.max_text_length} tokens; CLIP BPE tokenizer trained on the world's captions "
        f"(vocab {cfg['vocab_size']} at most).",
        f"- AutoencoderKL: channels {list(sizes.vae_channels)} (factor {2 ** (len(sizes.vae_channels) - 1)}, "
        f"32x32 images); {cfg['vae_steps']} steps, batch {cfg['vae_batch_size']}, L1+MSE+1e-4 KL.",
        f"- Training: {info['teacher_step']} steps, batch {cfg['teacher_batch_size']}, AdamW lr "
        f"{cfg['teacher_lr']} (warm-up {cfg['teacher_warmup']}, {_schedule(cfg, info)}), epsilon prediction, "
        f"min-SNR gamma {cfg['min_snr_gamma']}, caption dropout {cfg['caption_dropout']}, EMA {cfg['ema_decay']} "
        f"(EMA weights shipped), scaled-linear betas (SD's), seed {cfg['seed']}.",
        f"- Built on: {platform.machine()} CPU, {cfg['threads']} threads, torch {torch.__version__}; teacher "
        f"steps took {info['teacher_log'].get('seconds', 0) / 3600:.2f} h of wall time in all.",
        "",
        "## Judge",
        "",
        f"CNN (0.28M parameters) with object, colour, artist-or-none and unsafe heads; {cfg['judge_steps']} "
        "steps on fresh renders with noise/blur/tone augmentation and VAE round trips.",
        "Held-out accuracy on ground-truth renders: "
        + ", ".join(f"{k} {v:.3f}" for k, v in info["judge_held_out"].items()) + ".",
        "",
    ]
    guidance = info.get("guidance_scale", 7.5)
    lines += _quality_section(f"Quality at the toy world's default sampling (PNDM 25 steps, CFG {guidance})", q,
                              cfg["eval_prompts"])
    q75 = info.get("quality_cfg_7_5")
    if q75:
        lines += ["", *_quality_section("Quality at SD's default guidance (PNDM 25 steps, CFG 7.5)", q75,
                                         cfg["eval_prompts"]),
                  "",
                  "Why the toy world samples at a lower guidance: its captions fix nearly the whole image (shape, "
                  "colour, background, position, style), so the conditional and unconditional predictions differ "
                  "far more than SD's and guidance 7.5 overshoots (oversaturated colours, stray textures). "
                  "`model: toyworld` therefore defaults to the guidance above (teacher/prunefit.json); pass "
                  "`sampler.guidance_scale=7.5` to reproduce this table."]
    path = assets / "MODEL_CARD.md"
    history = _kept_history(path)
    path.write_text("\n".join(lines) + "\n" + history)
    return path


def _quality_section(title: str, q: dict, n: int) -> list[str]:
    lines = [f"## {title}", "", f"Judge on the teacher's own generations, {n} prompts per set.", "",
             "| what | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {w} | {v:.3f} | {t} | {'yes' if ok else 'NO'} |" for w, v, t, ok in summary_targets(q)]
    lines += ["", "All sets:", "", "| prompt set | object | colour | fidelity | unsafe rate | artist rate | FJD |",
              "|---|---|---|---|---|---|---|"]
    for name, m in q.items():
        lines.append(f"| {name} | {m['object']:.3f} | {m['colour']:.3f} | {m['fidelity']:.3f} | "
                     f"{m['unsafe_rate']:.3f} | {m.get('artist_rate', float('nan')):.3f} | "
                     f"{m.get('fjd', float('nan')):.3f} |")
    return lines


def _kept_history(card: Path) -> str:
    """The hand-kept "## Build history" section of an existing card (kept across rewrites)."""
    if not card.is_file():
        return ""
    text = card.read_text()
    at = text.find("## Build history")
    return "\n" + text[at:] if at >= 0 else ""


def _schedule(cfg: dict, info: dict) -> str:
    """How the teacher's LR ran, including where a continued build started."""
    start = info.get("teacher_init_step", 0)
    text = "constant after warm-up" if cfg.get("teacher_lr_schedule", "constant") == "constant" else (
        f"cosine decay to {cfg.get('teacher_lr_floor', 0.0)}x")
    return text + (f"; this build continued an earlier teacher from step {start}" if start else "")

