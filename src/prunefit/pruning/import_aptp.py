"""Import an expert saved by the APTP authors' code (rezashkv/diffusion_pruning) as a prunefit expert folder.

Their two layouts, as their ``pdm/training/trainer.py`` and ``scripts/`` write them:

- a fine-tuned expert (a ``FineTuner`` ``checkpoint-N/``, the hub's ``APTP-*/archK``): ``arch_vector.pt``
  (``torch.save`` of a [1, D] float tensor, the expert's row of the router codebook, soft: an entry is kept where it is
  >= 0.5) beside ``unet/config.json`` (``UNet2DConditionModelPruned``: the base UNet config with their gated block
  names, ``gated_ff``, ``ff_gate_width`` and ``_name_or_path`` = the base model) and
  ``unet/diffusion_pytorch_model.safetensors`` (the physically pruned state dict under stock diffusers names, no
  tensors for removed blocks);
- a pruning checkpoint (a ``Pruner`` ``checkpoint-N/``, the hub's ``55`` / ``80``): ``quantizer_embeddings.pt``
  ([K, D], one row per expert: pick one with ``expert_id``), optionally ``unet/`` (the gated UNet holding the unchanged
  base weights; without it the base model's weights are sliced, as their fine-tuning does) and
  ``resource_ratios.pt`` ([K, 1] MAC ratios from their ``scripts/other/calculate_pruning_ratio.py``).

D follows their gate layout, which ``spec.gate_spec`` reproduces entry for entry ([width entries | depth gates]).
The MAC ratio is ours (``macs.mac_model`` of the base, counted on the meta device) at the base's latent size and
text length 77, and again under their reporting inputs (the same latent, a one-token text). Their counter
also counts norms and activations and prices cross-attention like self-attention, so theirs can differ by a few
points; expert.json records ours, theirs and whether they agree within ``tolerance``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from prunefit.errors import ConfigError, OutputError
from prunefit.pruning.expert import base_configs_match, expert_info, save_expert
from prunefit.pruning.macs import mac_model
from prunefit.pruning.materialize import materialize
from prunefit.pruning.spec import GateSpec, gate_spec

ARCH_FILE = "arch_vector.pt"
CODES_FILE = "quantizer_embeddings.pt"
RATIOS_FILE = "resource_ratios.pt"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
STOCK_BLOCKS = {"CrossAttnDownBlock2DHalfGated": "CrossAttnDownBlock2D", "DownBlock2DHalfGated": "DownBlock2D",
                "UpBlock2DHalfGated": "UpBlock2D", "CrossAttnUpBlock2DHalfGated": "CrossAttnUpBlock2D",
                "UNetMidBlock2DCrossAttnWidthGated": "UNetMidBlock2DCrossAttn"}
"""Their block names (``configs/*/sd-2-1_*.yaml``: depth gates on each block's last resnet and transformer) -> stock."""
AUTHORS_TEXT_LENGTH = 1
"""Their ratio is measured with ``text_encoder(torch.tensor([[100]]))``: text states of one token."""


@dataclass(frozen=True)
class AptpCheckpoint:
    """What an APTP checkpoint folder holds, read once."""

    path: Path
    layout: str
    """'expert' (arch_vector.pt + pruned unet/) or 'pruning' (quantizer_embeddings.pt, dense unet/ or none)."""
    arch: torch.Tensor
    """[D] the saved soft code."""
    unet_config: Optional[dict]
    """Their unet/config.json, None when the folder has no unet/."""
    expert_id: Optional[int]
    reported_ratio: Optional[float]
    """The expert's row of resource_ratios.pt, when the folder has one."""

    @property
    def weights(self) -> Optional[Path]:
        """Their UNet weights file, when present."""
        f = self.path / WEIGHTS
        return f if f.is_file() else None


def _load_tensor(f: Path) -> torch.Tensor:
    try:
        t = torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read {f} as a saved tensor ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"{f} holds a {type(t).__name__}, not the tensor the APTP code saves")
    return t.detach().float()


def read_checkpoint(path: str | Path, expert_id: Optional[int] = None) -> AptpCheckpoint:
    """Read an APTP checkpoint folder (ConfigError, one line, naming what is missing when it is not one)."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"APTP checkpoint folder not found: {path}")
    cfg_file = p / "unet" / "config.json"
    unet_config = None
    if cfg_file.is_file():
        try:
            unet_config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cfg_file} is not JSON ({exc})") from None
    if (p / ARCH_FILE).is_file():
        arch = _load_tensor(p / ARCH_FILE)
        if arch.dim() == 2 and arch.shape[0] != 1 or arch.dim() > 2:
            raise ConfigError(f"{p / ARCH_FILE} has shape {list(arch.shape)}; the APTP code saves one expert's [1, D]")
        if unet_config is None or not (p / WEIGHTS).is_file():
            raise ConfigError(f"{path} has {ARCH_FILE} but no {'unet/config.json' if unet_config is None else WEIGHTS}"
                              " (a fine-tuned APTP expert keeps its pruned UNet in unet/)")
        layout, arch = "expert", arch.reshape(-1)
    elif (p / CODES_FILE).is_file():
        codes = _load_tensor(p / CODES_FILE)
        if codes.dim() != 2:
            raise ConfigError(f"{p / CODES_FILE} has shape {list(codes.shape)}; the APTP code saves [experts, D]")
        if expert_id is None or not 0 <= expert_id < codes.shape[0]:
            raise ConfigError(f"{path} is an APTP pruning checkpoint with {codes.shape[0]} experts; pick one with "
                              f"--expert-id 0..{codes.shape[0] - 1}")
        layout, arch = "pruning", codes[expert_id]
    else:
        raise ConfigError(f"{path} is not an APTP checkpoint: it has neither {ARCH_FILE} (a fine-tuned expert, beside "
                          f"unet/) nor {CODES_FILE} (a pruning checkpoint)")
    return AptpCheckpoint(p, layout, arch, unet_config, expert_id, _reported(p / RATIOS_FILE, expert_id))


def _reported(f: Path, expert_id: Optional[int]) -> Optional[float]:
    if not f.is_file():
        return None
    r = _load_tensor(f).reshape(-1)
    if r.numel() == 1:
        return float(r[0])
    return float(r[expert_id]) if expert_id is not None and 0 <= expert_id < r.numel() else None


def stock_config(their: dict) -> tuple[dict, int]:
    """(stock ``UNet2DConditionModel`` config, FFN gate groups) from their UNet config.json."""
    cfg = {k: v for k, v in their.items() if not k.startswith("_") and k not in ("gated_ff", "ff_gate_width")}
    if their.get("gated_ff") is False:
        raise ConfigError("their UNet config has gated_ff: false; only APTP's layout with gated feed-forwards imports")
    for key in ("down_block_types", "up_block_types"):
        names = list(cfg.get(key) or [])
        odd = [n for n in names if n not in STOCK_BLOCKS and n not in STOCK_BLOCKS.values()]
        if odd:
            raise ConfigError(f"their UNet config's {key} has {odd[0]}; only APTP's half-depth-gated blocks import "
                              f"({', '.join(STOCK_BLOCKS)})")
        cfg[key] = [STOCK_BLOCKS.get(n, n) for n in names]
    if cfg.get("mid_block_type"):
        cfg["mid_block_type"] = STOCK_BLOCKS.get(cfg["mid_block_type"], cfg["mid_block_type"])
    groups = their.get("ff_gate_width", 32)
    if not isinstance(groups, int):
        raise ConfigError(f"their ff_gate_width is {groups!r}; only one gate width for every feed-forward imports")
    return cfg, groups


def _config_of(unet) -> dict:
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def _meta_unet(config: dict):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def hard_architecture(spec: GateSpec, arch: torch.Tensor) -> torch.Tensor:
    """Their soft code [D] -> the 0/1 architecture their materialization cuts (kept where >= 0.5). A width group
    with no kept entry inside a removed block keeps its first entry (the block is gone either way); one inside a kept
    block cannot be built (their code cannot either)."""
    hard = (arch >= 0.5).float()
    widths, depth = spec.split(hard.unsqueeze(0))
    dropped = {d.module for d, v in zip(spec.depth, depth[0]) if v < 0.5}
    for g, w in zip(spec.width, widths):
        if w.sum() == 0:
            if g.unit not in dropped:
                raise ConfigError(f"the architecture vector removes every gate of {g.name}; no UNet has that layout")
            w[0, 0] = 1.0
    return spec.join(widths, depth)[0]


def mac_ratios(base_config: dict, spec: GateSpec, hard: torch.Tensor, text_length: int) -> dict:
    """The expert's MACs over its base's (``macs.mac_model``, exact for a hard architecture) at the base's latent
    size: at ``text_length`` (ours) and at one text token (the APTP authors' inputs). The counting forward runs on the
    meta device (no memory, no weights) unless the UNet is small enough that a CPU forward is quicker."""
    from diffusers import UNet2DConditionModel

    dense = _meta_unet(base_config)
    if sum(p.numel() for p in dense.parameters()) < 20_000_000:
        dense = UNet2DConditionModel.from_config(base_config)
    latent = int(base_config["sample_size"])
    ours, theirs = mac_model(dense, spec, latent, text_length), mac_model(dense, spec, latent, AUTHORS_TEXT_LENGTH)
    code = hard.double().unsqueeze(0)  # float64: the ratio exact to the last digit of the counts
    return {"ours": float(ours.ratio(code)), "authors_inputs": float(theirs.ratio(code)),
            "teacher_gmacs": ours.total / 1e9, "latent_size": latent}


def _local_base_config(base: str) -> Optional[dict]:
    """The base model's UNet config when it is at hand (tiny, toyworld, a pipeline folder, a cached hub id)."""
    from diffusers import UNet2DConditionModel

    if base in ("tiny", "tiny-v"):  # its UNet does not depend on the prediction type
        from prunefit.models.tiny import TinySDConfig, build_unet

        with torch.device("meta"):
            return _config_of(build_unet(TinySDConfig()))
    if base == "toyworld":
        from prunefit.toyworld.paths import teacher_dir

        base = str(teacher_dir())
    try:
        raw = UNet2DConditionModel.load_config(base, subfolder="unet", local_files_only=True)
    except Exception:  # not at hand: the expert is checked against it when loaded
        return None
    return _config_of(_meta_unet(raw))


def _dense_state(ckpt: AptpCheckpoint, base: str) -> dict:
    """The unpruned weights a pruning checkpoint's expert is cut from: its unet/, else the base model's UNet."""
    if ckpt.weights is not None:
        from safetensors.torch import load_file

        return load_file(str(ckpt.weights))
    from prunefit.models.components import load_components

    return load_components(base).unet.state_dict()


def _load_into(unet, state: dict, what: str) -> None:
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ConfigError(f"{what} does not match the architecture vector ({' '.join(lines[1:3])[:200]})") from None


@dataclass
class ImportResult:
    output: Path
    mac_ratio: float
    authors_inputs_ratio: float
    reported_ratio: Optional[float]
    agrees: Optional[bool]

    def lines(self) -> list[str]:
        """What the import wrote and the MAC ratios, for the console."""
        out = [f"expert: {self.output}", f"MAC ratio {self.mac_ratio:.4f} (ours: full text length); "
               f"{self.authors_inputs_ratio:.4f} under the authors' inputs (one text token)"]
        if self.reported_ratio is not None:
            diff = abs(self.reported_ratio - self.authors_inputs_ratio)
            out.append(f"authors report {self.reported_ratio:.4f}: {'agrees' if self.agrees else 'DIFFERS'} "
                       f"(|diff| {diff:.4f})")
        return out


def import_aptp(checkpoint: str, output: str, base: Optional[str] = None, expert_id: Optional[int] = None,
                reported_ratio: Optional[float] = None, tolerance: float = 0.05, text_length: int = 77,
                log: Optional[Callable[[str], None]] = None) -> ImportResult:
    """Read an APTP checkpoint, write its expert to ``output`` (an expert folder every ``student=`` / ``expert=``
    accepts) and record its MAC ratio beside the one the authors report (``reported_ratio``, else
    resource_ratios.pt)."""
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not empty; pass a new folder (nothing was overwritten)")
    ckpt = read_checkpoint(checkpoint, expert_id)
    base = base or (ckpt.unet_config or {}).get("_name_or_path")
    if not base:
        raise ConfigError(f"{checkpoint} records no base model (unet/config.json's _name_or_path); pass --base")
    if ckpt.unet_config is not None:
        config, groups = stock_config(ckpt.unet_config)
        base_config = _config_of(_meta_unet(config))
        local = _local_base_config(base)
        if local is not None and not base_configs_match(base_config, local):
            raise ConfigError(f"{checkpoint}'s UNet is not {base}'s; pass the model it was pruned from with --base")
    else:
        base_config, groups = _local_base_config(base), 32
        if base_config is None:
            raise ConfigError(f"{checkpoint} has no unet/ and {base} is not at hand; pass a local base with --base")
    dense = _meta_unet(base_config)
    spec = gate_spec(dense, groups)
    if ckpt.arch.numel() != spec.dim:
        raise ConfigError(f"{checkpoint}'s architecture vector has {ckpt.arch.numel()} entries; {base}'s gate layout "
                          f"(ff_gate_width {groups}) has {spec.dim}: pass the base model it was pruned from")
    hard = hard_architecture(spec, ckpt.arch)
    if ckpt.layout == "expert":  # their pruned tensors fill our materialized layout exactly
        unet = copy.deepcopy(dense)
        kept = materialize(unet, spec, hard)
        from safetensors.torch import load_file

        _load_into(unet, load_file(str(ckpt.weights)), str(ckpt.weights))
    else:  # pretrained weights first, then slice
        unet = copy.deepcopy(dense)
        _load_into(unet, _dense_state(ckpt, base), str(ckpt.weights or base))
        kept = materialize(unet, spec, hard)
    ratios = mac_ratios(base_config, spec, hard, text_length)
    reported = reported_ratio if reported_ratio is not None else ckpt.reported_ratio
    agrees = None if reported is None else abs(reported - ratios["authors_inputs"]) <= tolerance
    protocol = {"latent_size": ratios["latent_size"], "text_length": text_length,
                "counter": "analytic (matches FlopCounterMode)", "teacher_gmacs": ratios["teacher_gmacs"]}
    extra = {"method": "aptp", "imported_from": str(Path(checkpoint).resolve()), "aptp_layout": ckpt.layout,
             "mac_ratio_authors_inputs": ratios["authors_inputs"], "mac_ratio_reported": reported,
             "mac_ratio_tolerance": tolerance, "mac_ratio_agrees": agrees}
    info = expert_info(dense, spec, hard, base, kept, ratios["ours"], protocol, expert_id=ckpt.expert_id, extra=extra)
    save_expert(unet.eval(), info, out)
    if log is not None and agrees is False:
        log(f"warning: the authors report MAC ratio {reported:.4f}, {ratios['authors_inputs']:.4f} measured under "
            f"their inputs (tolerance {tolerance}); check the base model and expert id")
    return ImportResult(out, ratios["ours"], ratios["authors_inputs"], reported, agrees)
