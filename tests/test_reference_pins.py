"""Figures the reference implementations produced (original ESD / ConceptPrune repositories, torchmetrics,
transformers, fvcore, the official APTP code), pinned so that a regression fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunefit.errors import ConfigError


@pytest.fixture(scope="module")
def sd21_meta():
    """SD 2.1's UNet from its published config, on the meta device (no memory, no weights)."""
    from diffusers import UNet2DConditionModel

    from prunefit.models.skeleton import unet_config

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(unet_config("sd21"))


def _count(named) -> tuple[int, int]:
    return len(named), sum(p.numel() for _, p in named)


# ------------------------------------------------------------------------------------------ ESD subsets
def test_esd_parameter_subsets_match_train_esd_on_sd21(sd21_meta):
    from prunefit.removal.context import param_subset

    assert _count(param_subset(sd21_meta, "xattn")) == (80, 50_352_320)
    noxattn = param_subset(sd21_meta, "noxattn")
    assert _count(noxattn) == (598, 813_495_680)  # train-esd.py: not attn2, not out., not time_embed
    names = {n for n, _ in noxattn}
    assert not any(n.startswith(("conv_out", "conv_norm_out", "time_embedding")) or "attn2" in n for n in names)
    assert "conv_in.weight" in names and "down_blocks.0.resnets.0.time_emb_proj.weight" in names
    assert _count(param_subset(sd21_meta, "full")) == (686, 865_910_724)


# ------------------------------------------------------------------------------------------ MACs
def test_sd21_unet_macs_match_fvcore(sd21_meta):
    from prunefit.pruning.macs import module_macs

    assert sum(module_macs(sd21_meta, latent_size=32, text_length=77).values()) == 90_545_233_920


# ------------------------------------------------------------------------------------------ ConceptPrune tau
def test_concept_prune_unions_only_the_first_tau_steps_by_hand():
    from prunefit.removal.concept_prune.method import union_over_steps

    w = torch.ones(2, 4)
    base = [torch.zeros(4)] * 4
    # ratio 0.25 -> k = 1 column per row; the top column of step t is column t
    target = [torch.eye(4)[t] * 3 + 1 for t in range(4)]
    for tau, cols in ((1, [0]), (2, [0, 1]), (4, [0, 1, 2, 3])):
        m = union_over_steps(w, target, base, 0.25, tau)
        assert m.sum().item() == 2 * len(cols)
        assert m[:, cols].all() and not m[:, [c for c in range(4) if c not in cols]].any()
    # a column that does not beat the base score is never skilled, whatever tau
    m = union_over_steps(w, target, [torch.full((4,), 10.0)] * 4, 0.25, 4)
    assert not m.any()


def test_concept_prune_tau_defaults_to_the_references_fraction():
    from prunefit.removal.concept_prune.method import ConceptPruneConfig

    assert ConceptPruneConfig(steps=50).tau == 10  # the reference: --timesteps 10 of 50
    assert ConceptPruneConfig(steps=25).tau == 5
    assert ConceptPruneConfig(steps=10).tau == 2
    assert ConceptPruneConfig(steps=3).tau == 1
    assert ConceptPruneConfig(steps=10, union_steps=7).tau == 7
    with pytest.raises(ConfigError, match=r"union_steps must be in \[1, steps=10\]"):
        ConceptPruneConfig(steps=10, union_steps=11)


def test_sd21_concept_prune_config_sets_tau_10_of_50():
    from prunefit.config.load import load_config
    from prunefit.removal.config import EraseConfig

    cfg = load_config(EraseConfig, ["configs/sd21/erase_concept_prune_nudity.yaml"])
    assert (cfg.concept_prune.steps, cfg.concept_prune.union_steps, cfg.concept_prune.tau) == (50, 10, 10)


# ------------------------------------------------------------------------------------------ CLIP score
def test_clip_score_clamp_conventions_differ_when_a_pair_is_negative():
    from prunefit.evaluation.clip import clip_score, mean_clip_score

    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    s = clip_score(img, txt)  # 100, -100, -100
    assert s.tolist() == pytest.approx([100.0, -100.0, -100.0])
    assert mean_clip_score(s, "mean_at_zero") == 0.0  # torchmetrics: max(mean(100 cos), 0)
    assert mean_clip_score(s, "each_at_zero") == pytest.approx(100 / 3)
    assert mean_clip_score(s, "none") == pytest.approx(-100 / 3)
    with pytest.raises(ValueError, match="unknown CLIP-score clamp"):
        mean_clip_score(s, "zero")


def test_clip_score_config_defaults_to_torchmetrics():
    from prunefit.evaluation.configs import ClipScoreConfig

    assert ClipScoreConfig().clamp == "mean_at_zero"
    with pytest.raises(ConfigError, match="clip_score.clamp must be"):
        ClipScoreConfig(clamp="per_pair")


def test_clip_preprocessing_floors_the_long_side_like_transformers():
    from prunefit.evaluation.clip import CLIP_MEAN, CLIP_STD, ClipEncoder, resize_shape

    # 32 * 70 / 50 = 44.8: transformers int() -> 44 (round() would give 45)
    assert resize_shape(50, 70, 32) == (32, 44)
    assert resize_shape(70, 50, 32) == (44, 32)
    assert resize_shape(224, 224, 224) == (224, 224)
    assert resize_shape(512, 768, 224) == (224, 336)
    img = torch.randint(0, 256, (1, 3, 50, 70), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    enc = ClipEncoder(model=None, tokenizer=None, size=32, mean=CLIP_MEAN, std=CLIP_STD, name="test")
    x = F.interpolate(img.float() / 255, size=(32, 44), mode="bicubic", align_corners=False, antialias=True)
    x = x[..., :, 6:38].clamp(0, 1)  # centre crop: left = (44 - 32) // 2 = 6
    expected = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(enc.preprocess(img), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------ min-SNR
def test_min_snr_legacy_v_form_is_the_official_codes():
    from prunefit.losses.diffusion import min_snr_weights

    s = torch.tensor([0.25, 4.5, 9.0, 20.0])
    # official APTP code (v-prediction): snr' = snr + 1; w = min(snr', 5) / snr'
    legacy = min_snr_weights(s, 5.0, "v_prediction", formula="legacy")
    assert torch.allclose(legacy, torch.tensor([1.0, 5 / 5.5, 5 / 10, 5 / 21]))
    paper = min_snr_weights(s, 5.0, "v_prediction", formula="paper")  # Hang et al.: min(snr, 5) / (snr + 1)
    assert torch.allclose(paper, torch.tensor([0.25 / 1.25, 4.5 / 5.5, 5 / 10, 5 / 21]))
    eps = torch.tensor([1.0, 1.0, 5 / 9, 5 / 20])  # epsilon: both forms are min(snr, 5) / snr
    assert torch.allclose(min_snr_weights(s, 5.0, "epsilon", formula="legacy"), eps)
    assert torch.allclose(min_snr_weights(s, 5.0, "epsilon", formula="paper"), eps)


def test_esd_ddim_depth_reaches_every_index_like_train_esd():
    import torch

    from prunefit.removal.esd.method import ddim_depth

    g = torch.Generator().manual_seed(0)
    draws = [ddim_depth(g, 5) for _ in range(400)]
    assert set(draws) == {0, 1, 2, 3, 4}  # the first (pure noise) and the last index included
    counts = [draws.count(k) for k in range(5)]
    assert min(counts) > 50  # uniform: 80 expected per index
