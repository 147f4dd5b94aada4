"""Facts of the shipped toy teacher: its sizes and its default guidance scale."""

from __future__ import annotations

TEACHER_SIZES = dict(
    unet_channels=(32, 64, 64), attention_levels=(False, True, True), layers_per_block=2, attention_heads=4,
    norm_groups=8, cross_attention_dim=64, latent_size=16, vae_channels=(32, 64), text_hidden=64, text_layers=2,
    text_heads=4, max_text_length=32,
)
"""Sizes of the shipped teacher (``prunefit.models.tiny.TinySDConfig``'s keyword arguments): SD 2.x blocks at toy
width; 32x32 images, 16x16x4 latents (VAE factor 2).

Cross-attention sits at the 8x8 and 4x4 levels (and the mid block) rather than at 16x16 as SD places it:
self-attention over 256 tokens made a CPU training step 1.8x slower (0.47 vs 0.26 s at batch 32). A VAE of
factor 4 (8x8 latents) was faster still but lost the artists' textures (dots, stripes) in reconstruction."""


TOY_GUIDANCE = 3.0
"""The toy world's default classifier-free guidance. Its captions fix nearly the whole image (shape, colour,
background, position, style), so conditional and unconditional predictions differ far more than SD's and
guidance overshoots: the shipped teacher meets every quality target at 3.0 and fails colour, neutral-unsafe and
one artist at 7.5 (MODEL_CARD.md has both tables). Recorded in teacher/prunefit.json."""

