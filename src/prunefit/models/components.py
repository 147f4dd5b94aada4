"""Load Stable Diffusion components (toy world, tiny, local diffusers folder or hub id) and build pipelines."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from prunefit.errors import ModelLoadError
from prunefit.models.parts import DEFAULT_GUIDANCE, Components  # noqa: F401  (re-exported)
from prunefit.utils.io import atomic_folder

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SIDECAR = "prunefit.json"


def read_sidecar(folder: Path) -> dict:
    """prunefit's notes on a pipeline folder (``prunefit.json``: e.g. default_guidance_scale), or {}."""
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc.msg}); fix or delete it") from None


def write_sidecar(folder: Path, default_guidance: float, method_defaults: dict | None = None) -> None:
    """Record a pipeline folder's default guidance (and removal-method defaults, if any) in its prunefit.json."""
    doc: dict = {"default_guidance_scale": default_guidance}
    if method_defaults:
        doc["method_defaults"] = method_defaults
    (Path(folder) / SIDECAR).write_text(json.dumps(doc, indent=1) + "\n")


def model_sidecar(spec: str) -> dict:
    """The prunefit.json of the model ``spec`` names, without loading it: the toy teacher's, a local folder's,
    or {} (tiny, hub ids)."""
    if spec == "toyworld":
        from prunefit.toyworld.paths import teacher_dir

        return read_sidecar(teacher_dir())
    path = Path(spec).expanduser()
    return read_sidecar(path) if path.is_dir() else {}


def save_pipeline(components: Components, target: Path) -> Path:
    """Save ``components`` as a standard diffusers folder, plus prunefit.json when its default guidance is
    not SD's or it carries method defaults (so a toy-world derivative keeps sampling and erasing like the toy
    world). The folder is written atomically (its presence marks a finished dense run)."""
    with atomic_folder(target, replace=True) as tmp:
        make_pipeline(components).save_pretrained(tmp)
        if components.default_guidance != DEFAULT_GUIDANCE or components.method_defaults:
            write_sidecar(tmp, components.default_guidance, components.method_defaults)
    return Path(target)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named ``name`` (an error lists the known names)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {name!r}; available: {sorted(_DTYPES)}") from None


def _check_pipeline_folder(path: Path) -> None:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{path} is not a diffusers pipeline folder (no model_index.json); "
                             "pass a folder saved by StableDiffusionPipeline.save_pretrained or a hub id")
    try:
        info = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{index} is not valid JSON ({exc.msg}); the pipeline folder is corrupt") from None
    missing = [k for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if k not in info]
    if missing:
        raise ModelLoadError(f"{path} is not a Stable Diffusion pipeline: model_index.json lacks {missing}")


def check_model_spec(spec: str) -> None:
    """Fail fast (ModelLoadError, one line) when ``spec`` cannot name a loadable model, without loading it:
    an unbuilt toy world, a missing or non-pipeline folder, a hub id absent from the cache while offline."""
    if spec in ("tiny", "tiny-v"):
        return
    if spec == "toyworld":
        from prunefit.toyworld.paths import teacher_dir

        if not (teacher_dir() / "model_index.json").is_file():
            raise ModelLoadError("the toy-world teacher is not built in this installation; "
                                 "run `prunefit toyworld build` (or use model=tiny for a smoke test)")
        return
    path = Path(spec).expanduser()
    if path.exists():
        _check_pipeline_folder(path)
        return
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelLoadError(f"model folder not found: {spec}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "model_index.json"), str):
            raise ModelLoadError(f"cannot load model {spec!r} from the hub: HF_HUB_OFFLINE is set and it is not in "
                                 "the local cache; download it on a machine with internet or pass a local folder")


@contextlib.contextmanager
def _no_loading_bars():
    """diffusers' "Loading pipeline components" and transformers' "Loading weights" bars off while loading, so an
    error right after a load is the only line the user sees."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def _load_pipeline_parts(spec: str, dtype: torch.dtype) -> Components:
    from diffusers import StableDiffusionPipeline

    path = Path(spec).expanduser()
    is_local = path.exists()
    if is_local:
        _check_pipeline_folder(path)
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"model folder not found: {spec}")
    kwargs = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False, dtype=dtype)
    try:
        with _no_loading_bars():
            pipe = StableDiffusionPipeline.from_pretrained(str(path) if is_local else spec,
                                                           local_files_only=is_local or None, **kwargs)
    except (OSError, ValueError) as exc:
        if not is_local:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
            hint = ("HF_HUB_OFFLINE is set and it is not in the local cache; download it on a machine with "
                    "internet or pass a local folder") if offline else "check the id, your network and HF token"
            raise ModelLoadError(f"cannot load model {spec!r} from the hub: {hint}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load pipeline folder {path}: {first}") from None
    sidecar = read_sidecar(path) if is_local else {}
    return Components(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                      scheduler=pipe.scheduler, source=spec,
                      default_guidance=float(sidecar.get("default_guidance_scale", DEFAULT_GUIDANCE)),
                      method_defaults=sidecar.get("method_defaults", {}))


def load_components(spec: str, dtype: str = "float32", device: str = "cpu") -> Components:
    """Load components named by ``spec``: 'toyworld', 'tiny', 'tiny-v' (v-prediction), a folder or a hub id."""
    dt = torch_dtype(dtype)
    if spec in ("tiny", "tiny-v"):
        from prunefit.models.tiny import TinySDConfig, tiny_components

        comps = tiny_components(TinySDConfig(prediction_type="v_prediction" if spec == "tiny-v" else "epsilon"))
        comps.source = spec
    elif spec == "toyworld":
        from prunefit.toyworld.paths import teacher_dir

        folder = teacher_dir()
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError("the toy-world teacher is not built in this installation; "
                                 "run `prunefit toyworld build` (or use model=tiny for a smoke test)")
        comps = _load_pipeline_parts(str(folder), dt)
        comps.source = "toyworld"
    else:
        comps = _load_pipeline_parts(spec, dt)
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.eval().requires_grad_(False)
    return comps.to(device, dt)


def make_pipeline(components: Components, scheduler: Any | None = None):
    """A stock ``StableDiffusionPipeline`` over ``components`` (no safety checker; sampler optional)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=scheduler or components.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_prompts(components: Components, texts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states [B, L, C] for ``texts`` (padded to the tokenizer's max length)."""
    tok = components.tokenizer
    ids = tok(list(texts), padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(components.text_encoder.device)
    return components.text_encoder(ids)[0]


def encode_images(components: Components, images: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents (sampled, scaled by the VAE's scaling factor) of images [B, 3, H, W] in [-1, 1]."""
    vae = components.vae
    x = images.to(vae.device, vae.dtype)
    return vae.encode(x).latent_dist.sample(generator=generator) * vae.config.scaling_factor
