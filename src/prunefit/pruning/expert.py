"""Experts on disk: ``expert.json`` (keep-masks, widths, width multiple, source, MAC ratio) + ``unet.safetensors``.

``load_expert(path)`` rebuilds the UNet from the base config stored in ``expert.json``, applies the
keep-masks by slicing (no gating code involved), then loads the pruned weights strictly, so a file
that does not match its description fails loudly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from prunefit.errors import ModelLoadError
from prunefit.models.components import Components, save_pipeline
from prunefit.pruning.materialize import materialize
from prunefit.pruning.spec import GateSpec, gate_spec, unrounded_widths
from prunefit.utils.io import atomic_folder

FORMAT = "prunefit-expert/1"


@dataclass
class ExpertInfo:
    """What expert.json records."""

    source_model: str
    base_config: dict[str, Any]
    arch: list[float]
    """The hard architecture vector (0/1, spec order)."""
    ffn_groups: int
    kept: dict[str, int]
    mac_ratio: float
    mac_protocol: dict[str, Any]
    expert_id: Optional[int] = None
    extra: Optional[dict[str, Any]] = None
    width_multiple: int = 1
    """Kept widths are multiples of this wherever the full width is (1: not rounded, as every expert written
    before the setting existed)."""

    def to_json(self) -> dict:
        """The expert.json document: the format tag and every field."""
        return {"format": FORMAT, **self.__dict__}


def _clean_config(config) -> dict[str, Any]:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def base_configs_match(a: dict, b: dict) -> bool:
    """Whether two base-model UNet configs agree on every key (values normalized, so lists equal tuples)."""
    keys = set(a) | set(b)
    return all(_norm(a.get(k)) == _norm(b.get(k)) for k in keys)


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def save_expert(unet, info: ExpertInfo, path: str | Path) -> Path:
    """Write an expert folder atomically (temporary folder, then rename)."""
    final = Path(path)
    with atomic_folder(final, replace=True) as tmp:
        state = {k: v.detach().contiguous() for k, v in unet.state_dict().items()}
        save_file(state, str(tmp / "unet.safetensors"))
        (tmp / "expert.json").write_text(json.dumps(info.to_json(), indent=1))
    return final


def read_expert_info(path: str | Path) -> ExpertInfo:
    """An expert folder's expert.json as ``ExpertInfo`` (an error if absent, corrupt or of another format)."""
    f = Path(path) / "expert.json"
    if not f.is_file():
        raise ModelLoadError(f"{path} is not an expert folder (no expert.json)")
    try:
        data = json.loads(f.read_text())
        if data.pop("format", None) != FORMAT:
            raise ValueError("unknown format")
        return ExpertInfo(**data)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{f} is corrupt or not a {FORMAT} file ({exc}); re-export the expert") from None


def check_expert_folder(path: str | Path) -> ExpertInfo:
    """Fail fast (ModelLoadError, one line) unless ``path`` is a readable expert: a valid expert.json and a
    unet.safetensors whose header parses (the tensors are not read)."""
    from safetensors import safe_open

    info = read_expert_info(path)
    weights = Path(path) / "unet.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except Exception as exc:
        raise ModelLoadError(f"cannot read {weights} ({str(exc).splitlines()[0][:120]}); the file is corrupt") from None
    return info


def build_expert_unet(info: ExpertInfo):
    """The pruned architecture with uninitialized-from-file weights (UNet built from the base config)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(info.base_config)
    spec = gate_spec(unet, info.ffn_groups)
    if spec.dim != len(info.arch):
        raise ModelLoadError(f"expert architecture has {len(info.arch)} entries; its base UNet layout has {spec.dim}")
    materialize(unet, spec, torch.tensor(info.arch))
    return unet


def load_expert(path: str | Path, expected_base: Optional[dict] = None, dtype: torch.dtype = torch.float32):
    """Rebuild an expert UNet from its folder; ``expected_base`` (a UNet config) checks the base model."""
    info = read_expert_info(path)
    if expected_base is not None and not base_configs_match(info.base_config, _clean_config(expected_base)):
        raise ModelLoadError(f"expert {path} was pruned from another base model ({info.source_model}); "
                             "use it with the model it came from")
    weights = Path(path) / "unet.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing")
    unet = build_expert_unet(info)
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {weights} ({str(exc).splitlines()[0][:120]}); the file is corrupt") from None
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{weights} does not match its expert.json ({str(exc).splitlines()[0][:160]})") from None
    if dtype != torch.float32:
        unet = unet.to(dtype)
    return unet.eval().requires_grad_(False), info


def save_student(unet, info, comps: Components, out: Path, extra: dict) -> Path:
    """An expert folder (pruned students) or a standard diffusers pipeline folder (dense students)."""
    if info is not None:
        info = copy.deepcopy(info)
        info.extra = {**(info.extra or {}), **extra}
        return save_expert(unet, info, out / "expert")
    return save_pipeline(comps.with_unet(unet), out / "pipeline")


def expert_info(unet_base, spec: GateSpec, arch: torch.Tensor, source: str, kept: dict, mac_ratio: float,
                mac_protocol: dict, expert_id: Optional[int] = None, extra: Optional[dict] = None,
                width_multiple: int = 1) -> ExpertInfo:
    """The expert.json record of hard ``arch`` [dim]; refuses a ``width_multiple`` its widths do not keep."""
    off = unrounded_widths(spec, arch, width_multiple)
    if off:
        raise ValueError(f"{len(off)} width groups are not rounded to width_multiple={width_multiple} "
                         f"(first: {off[0]}); round the architecture with spec.round_widths before exporting")
    return ExpertInfo(source_model=source, base_config=_clean_config(unet_base.config),
                      arch=[float(x) for x in arch.reshape(-1).tolist()], ffn_groups=_ffn_groups(spec),
                      kept=kept, mac_ratio=float(mac_ratio), mac_protocol=mac_protocol, expert_id=expert_id,
                      extra=extra, width_multiple=width_multiple)


def _ffn_groups(spec: GateSpec) -> int:
    sizes = {g.size for g in spec.width if g.kind == "ffn"}
    return max(sizes) if sizes else 32
