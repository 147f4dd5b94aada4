"""Full-size SD configs: parameter counts against the published checkpoints (meta device), the real CLIP BPE
tokenizer, and the skeleton folder's refusals."""

from __future__ import annotations

import pytest
import torch

from prunefit.errors import ConfigError
from prunefit.models import skeleton as sk


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", sk.ARCHS)
def test_unet_and_vae_match_published_parameter_counts(arch):
    with torch.device("meta"):
        unet, vae = sk.build_unet(arch), sk.build_vae(arch)
    assert _n(unet) == sk.PUBLISHED_PARAMS[f"unet/{arch}"]
    assert _n(vae) == sk.PUBLISHED_PARAMS["vae"]


@pytest.mark.parametrize("arch,expected", [("sd15", 123_060_480), ("sd21", 340_387_840)])
def test_text_encoder_parameter_counts(arch, expected):
    # CLIP ViT-L/14 text tower (123.06M) and OpenCLIP ViT-H/14 text tower cut at 23 of 24 layers (340.39M).
    with torch.device("meta"):
        te = sk.build_text_encoder(arch)
    assert _n(te) == expected


def test_sd21_unet_shapes_are_the_published_ones():
    with torch.device("meta"):
        unet = sk.build_unet("sd21")
    attn = unet.down_blocks[0].attentions[0]
    assert isinstance(attn.proj_in, torch.nn.Linear)  # use_linear_projection
    assert attn.transformer_blocks[0].attn1.heads == 5
    assert unet.down_blocks[2].attentions[0].transformer_blocks[0].attn1.heads == 20
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.in_features == 1024
    assert unet.config.sample_size == 96 and sk.unet_config("sd21-base")["sample_size"] == 64


def test_schedulers_prediction_types():
    assert sk.build_scheduler("sd15").config.prediction_type == "epsilon"
    assert sk.build_scheduler("sd21").config.prediction_type == "v_prediction"
    assert type(sk.build_scheduler("sd21")).__name__ == "DDIMScheduler"
    assert sk.build_scheduler("sd21-base").config.prediction_type == "epsilon"


def test_real_clip_tokenizer_ids():
    tok = sk.clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    ids = tok(["a cat"], padding="max_length", max_length=6).input_ids[0]
    assert ids == [49406, 320, 2368, 49407, 49407, 49407]  # SD 1.5 pads with <|endoftext|>
    ids2 = sk.clip_tokenizer(pad_token="!")(["a cat"], padding="max_length", max_length=6).input_ids[0]
    assert ids2 == [49406, 320, 2368, 49407, 0, 0]  # SD 2.x pads with "!"


def test_unknown_arch_and_non_empty_folder_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown arch"):
        sk.unet_config("sdxl")
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        sk.build_skeleton("sd15", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_skeleton_refuses_a_non_empty_folder(tmp_path, capsys):
    from prunefit.cli import main

    (tmp_path / "old").write_text("keep")
    assert main(["dev", "skeleton", "--arch", "sd21", "-o", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "old").read_text() == "keep"


def test_sd21_gate_layout_is_the_official_1620_entries():
    from prunefit.pruning.spec import gate_spec

    with torch.device("meta"):
        spec = gate_spec(sk.build_unet("sd21"))
    assert (len(spec.width), spec.width_dim, spec.depth_dim, spec.dim) == (70, 1606, 14, 1620)


def test_full_size_analytic_macs_equal_flop_counter_on_meta():
    from prunefit.evaluation.cost import count_macs
    from prunefit.pruning.macs import module_macs

    with torch.device("meta"):
        unet = sk.build_unet("sd21")
    assert sum(module_macs(unet, 8, 77).values()) == count_macs(unet, 8, 77)
