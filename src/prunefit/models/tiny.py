"""Build small Stable-Diffusion-structured components from a config (random weights, no download).

The UNet keeps the SD 2.x block structure at toy width: cross-attention down and up blocks with
GEGLU feed-forward and linear projections, GroupNorm resnets, a plain down and up block at the
lowest resolution, and ``layers_per_block`` >= 2 so depth pruning has something to remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from prunefit.errors import ConfigError
from prunefit.models.parts import Components
from prunefit.models.schedulers import sd_training_scheduler_config
from prunefit.models.tokenizer import byte_level_tokenizer


@dataclass(frozen=True)
class TinySDConfig:
    """Sizes of a tiny SD pipeline. Defaults give ~0.5M UNet parameters and 32x32 images."""

    unet_channels: tuple[int, ...] = (16, 32)
    attention_levels: tuple[bool, ...] = ()
    """Which resolution levels (high to low) get cross-attention blocks; () = SD 2.x: all but the lowest."""
    layers_per_block: int = 2
    attention_heads: int = 2
    norm_groups: int = 8
    cross_attention_dim: int = 32
    latent_size: int = 16
    vae_channels: tuple[int, ...] = (16, 32)
    """VAE widths; len(vae_channels) - 1 downsamplings, so 2 entries = factor 2 (32x32 images)."""
    text_hidden: int = 32
    text_layers: int = 2
    text_heads: int = 2
    max_text_length: int = 77
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")
        if self.attention_levels and len(self.attention_levels) != len(self.unet_channels):
            raise ConfigError("attention_levels needs one entry per unet_channels level")
        for c in self.unet_channels + self.vae_channels:
            if c % self.norm_groups:
                raise ConfigError(f"channel width {c} is not divisible by norm_groups={self.norm_groups}")


def toy_teacher_config() -> TinySDConfig:
    """The shipped toy teacher's sizes (``prunefit.toyworld.teacher.TEACHER_SIZES``)."""
    from prunefit.toyworld.teacher import TEACHER_SIZES

    return TinySDConfig(**TEACHER_SIZES)


def build_unet(cfg: TinySDConfig) -> UNet2DConditionModel:
    """An SD-2.x-structured UNet: CrossAttnDown x (n-1) + Down, then Up + CrossAttnUp x (n-1) by default;
    ``attention_levels`` moves the cross-attention blocks to other resolutions."""
    n = len(cfg.unet_channels)
    attn = cfg.attention_levels or (True,) * (n - 1) + (False,)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers' name for the number of heads in SD 2.x
        use_linear_projection=True,
        norm_num_groups=cfg.norm_groups,
    )


def build_vae(cfg: TinySDConfig) -> AutoencoderKL:
    """A randomly initialized tiny VAE: 3-channel images, 4 latent channels, one level per ``vae_channels`` entry."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=cfg.norm_groups,
        sample_size=cfg.latent_size * 2 ** (n - 1),
    )


def build_text_encoder(cfg: TinySDConfig, tokenizer) -> CLIPTextModel:
    """A randomly initialized tiny CLIP text encoder over ``tokenizer``'s vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_text_length,
        projection_dim=cfg.cross_attention_dim,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def tiny_components(cfg: TinySDConfig | None = None, seed: int = 0, tokenizer=None) -> Components:
    """Random-weight tiny SD components, deterministic in ``seed``; ``tokenizer`` defaults to byte-level."""
    cfg = cfg or TinySDConfig()
    if cfg.text_hidden != cfg.cross_attention_dim:
        raise ConfigError("text_hidden must equal cross_attention_dim (the UNet attends to text hidden states)")
    tokenizer = tokenizer or byte_level_tokenizer(cfg.max_text_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(cfg)
        vae = build_vae(cfg)
        text_encoder = build_text_encoder(cfg, tokenizer)
    scheduler = PNDMScheduler.from_config({**sd_training_scheduler_config(cfg.prediction_type), "skip_prk_steps": True})
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                      scheduler=scheduler, source=f"tiny(seed={seed})")
