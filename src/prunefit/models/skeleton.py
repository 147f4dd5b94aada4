"""Full-size Stable Diffusion pipelines (SD 1.5, SD 2.1, SD 2.1-base) from their published configs, random weights.

The configs below are the published diffusers configs of ``runwayml/stable-diffusion-v1-5``,
``stabilityai/stable-diffusion-2-1`` and ``stabilityai/stable-diffusion-2-1-base`` (facts, written out as
dicts). ``build_skeleton`` writes a complete ``StableDiffusionPipeline`` folder with weights drawn from a fixed
seed and the real CLIP BPE tokenizer (49,408 tokens; the vocabulary ships inside the open-clip-torch wheel),
so every shape, hook, gate, file format and memory cost of the real models can be exercised without a hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

from prunefit.errors import ConfigError, ModelLoadError
from prunefit.utils.io import atomic_folder

ARCHS = ("sd15", "sd21", "sd21-base")
CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = 48894
"""SimpleTokenizer keeps merges 1 .. 49152 - 256 - 2 of the vocab file: 48,894 merges."""

PUBLISHED_PARAMS = {
    "unet/sd15": 859_520_964,
    "unet/sd21": 865_910_724,
    "unet/sd21-base": 865_910_724,
    "vae": 83_653_863,
}
"""Parameter counts of the published checkpoints (the tests hold the configs to them)."""


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def native_resolution(arch: str) -> int:
    """Image side the checkpoint was trained at: 512 (SD 1.5, SD 2.1-base) or 768 (SD 2.1)."""
    _check_arch(arch)
    return 768 if arch == "sd21" else 512


def unet_config(arch: str) -> dict:
    """The published ``unet/config.json`` (UNet2DConditionModel) of ``arch``."""
    _check_arch(arch)
    cfg = {
        "sample_size": native_resolution(arch) // 8,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }
    if arch != "sd15":
        cfg.update({
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],  # diffusers' name for the number of heads per level
            "use_linear_projection": True,
            "dual_cross_attention": False,
            "only_cross_attention": False,
            "num_class_embeds": None,
            "upcast_attention": arch == "sd21",
        })
    return cfg


def text_encoder_config(arch: str) -> dict:
    """The published ``text_encoder/config.json`` (CLIPTextModel): CLIP ViT-L/14 text tower for SD 1.5,
    OpenCLIP ViT-H/14 text tower (penultimate layer: 23 of 24 layers) for SD 2.x."""
    _check_arch(arch)
    common = {"vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": 77, "layer_norm_eps": 1e-5,
              "initializer_factor": 1.0, "initializer_range": 0.02, "attention_dropout": 0.0, "dropout": 0.0,
              "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    if arch == "sd15":
        return {**common, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "projection_dim": 768, "hidden_act": "quick_gelu"}
    return {**common, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
            "num_attention_heads": 16, "projection_dim": 512, "hidden_act": "gelu"}


def vae_config(arch: str = "sd15") -> dict:
    """The published ``vae/config.json`` (AutoencoderKL, 83.65M parameters; same weights shape for all three)."""
    _check_arch(arch)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": native_resolution(arch),
        "scaling_factor": 0.18215,
    }


def scheduler_config(arch: str) -> dict:
    """The published ``scheduler/scheduler_config.json``: PNDM/epsilon (SD 1.5, 2.1-base), DDIM/v (SD 2.1).

    Returns the class name under ``_class_name`` and the constructor arguments."""
    _check_arch(arch)
    cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "trained_betas": None, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    if arch == "sd21":
        return {"_class_name": "DDIMScheduler", **cfg, "prediction_type": "v_prediction"}
    return {"_class_name": "PNDMScheduler", **cfg, "skip_prk_steps": True, "prediction_type": "epsilon"}


def tokenizer_pad_token(arch: str) -> str:
    """SD 1.5's tokenizer pads with <|endoftext|>; SD 2.x's (OpenCLIP) tokenizer config pads with "!" (id 0)."""
    _check_arch(arch)
    return "<|endoftext|>" if arch == "sd15" else "!"


# ----------------------------------------------------------------------------------------------- tokenizer
def clip_vocab_file() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch wheel (not imported:
    ``import open_clip`` needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the real CLIP tokenizer needs the open-clip-torch wheel: "
                             "pip install --no-deps open-clip-torch==3.3.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall open-clip-torch (pip install --no-deps open-clip-torch)")
    return path


def clip_bpe_vocab() -> tuple[list[str], list[tuple[str, str]]]:
    """CLIP's 49,408 tokens (256 byte symbols, their ``</w>`` forms, 48,894 merges, 2 specials) and merges."""
    from prunefit.models.tokenizer import BOS, EOS, bytes_to_unicode

    with gzip.open(clip_vocab_file(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    return tokens, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77):
    """The real CLIP BPE tokenizer as a stock ``transformers.CLIPTokenizer`` (built through vocab.json +
    merges.txt, which loads the same way on transformers 4.x and 5.x)."""
    from transformers import CLIPTokenizer

    tokens, merges = clip_bpe_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=model_max_length, pad_token=pad_token)
    return tok


# ----------------------------------------------------------------------------------------------- models
def build_unet(arch: str):
    """A randomly initialized UNet of architecture ``arch``."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(unet_config(arch))


def build_vae(arch: str):
    """A randomly initialized VAE of architecture ``arch``."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(vae_config(arch))


def build_text_encoder(arch: str):
    """A randomly initialized CLIP text encoder of architecture ``arch``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_encoder_config(arch)))


def build_scheduler(arch: str):
    """The noise scheduler of architecture ``arch``, from its config."""
    import diffusers

    cfg = scheduler_config(arch)
    return getattr(diffusers, cfg.pop("_class_name")).from_config(cfg)


def build_skeleton(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a complete ``StableDiffusionPipeline`` folder for ``arch`` to ``out_dir`` (weights from ``seed``).

    Refuses a non-empty ``out_dir`` (nothing is overwritten); writes to a sibling temp folder and renames it
    into place, so an interrupted build leaves nothing half-written."""
    from diffusers import StableDiffusionPipeline

    _check_arch(arch)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; pass a new folder (or delete it)")
    tokenizer = clip_tokenizer(pad_token=tokenizer_pad_token(arch))
    torch.manual_seed(seed)
    unet, vae, text_encoder = build_unet(arch), build_vae(arch), build_text_encoder(arch)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(arch), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with atomic_folder(out, replace=True) as stage:  # replaces only the empty folder checked above
        pipe.save_pretrained(stage)
        (stage / "skeleton.json").write_text(json.dumps({"arch": arch, "seed": seed, "weights": "random"}) + "\n")
    return out
