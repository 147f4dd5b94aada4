"""Say which model a path names, and check that a path is the model a recipe was told it is.

``resolve_model(path)`` -> ``ModelRef``: a dense model ('toyworld', 'tiny', a diffusers pipeline folder, a hub
id), an expert folder (``expert.json``), routed experts (a ``prunefit prune`` folder: ``router/`` +
``experts/``) or an experiment row folder (``row.json``, or ``expert/`` / ``pipeline/`` inside). It reads JSON
only, never weights; ``model_components`` and ``load_student`` then load what it named. A student may also be a
plain diffusers UNet folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, e.g. a BK-SDM student).

A student, expert or model may also name an expert of a ``prunefit prune`` output by its MAC ratio:
``runs/sd21/prune@mac=0.8`` is the expert whose expert.json records the MAC ratio nearest 0.8 (within
``MAC_TOLERANCE``), so a config says which expert it means (the paper's ~80% expert) rather than an index that
another pruning run numbers differently (``expert_by_mac``).

``check_inputs(model=..., student=...)`` checks a recipe's inputs before anything is created or loaded. Every
check is cheap (file headers and JSON, no weights) and raises the reader's own one-line error, so a bad path fails
before an output folder exists and before a progress bar or loading line is printed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from prunefit.errors import ConfigError, ModelLoadError

KINDS = ("dense", "expert", "routed", "row")

MAC_TOLERANCE = 0.05
"""How far the nearest expert's MAC ratio may be from the one a ``<prune output>@mac=R`` spec asks for."""
_MAC_SPEC = re.compile(r"^(?P<dir>.+)@mac=(?P<ratio>[0-9]*\.?[0-9]+)$")


def expert_by_mac(spec: str | Path) -> str:
    """``<prune output>@mac=R`` -> the folder of its expert whose MAC ratio is nearest R (refused, in one line,
    when none is within ``MAC_TOLERANCE``); any other spec is returned unchanged."""
    m = _MAC_SPEC.match(str(spec))
    if m is None:
        return str(spec)
    from prunefit.pruning.expert import read_expert_info

    root, want = Path(m["dir"]), float(m["ratio"])
    experts = sorted((root / "experts").glob("expert-*")) if (root / "experts").is_dir() else []
    if not experts:
        raise ModelLoadError(f"{spec}: {root} has no experts/expert-*; name a finished `prunefit prune` output")
    ratios = {e: read_expert_info(e).mac_ratio for e in experts}
    best = min(ratios, key=lambda e: (abs(ratios[e] - want), e.name))
    if abs(ratios[best] - want) > MAC_TOLERANCE:
        have = ", ".join(f"{e.name} {r:.3f}" for e, r in ratios.items())
        raise ConfigError(f"{spec}: no expert within {MAC_TOLERANCE} of MAC ratio {want} ({have}); name one of "
                          "them by path or by its ratio")
    return str(best)


@dataclass(frozen=True)
class ModelRef:
    """What a model path names. ``base`` is the dense model whose components load it (a dense model is its own
    base); an expert (or a row whose model is one) sets ``expert``, routed experts set ``prune_dir``, a row
    sets ``row`` (its folder) and the fields of the model it holds."""

    kind: str
    path: str
    """The path or id as given."""
    base: str
    expert: Optional[str] = None
    prune_dir: Optional[str] = None
    row: Optional[str] = None

    @property
    def loads(self) -> str:
        """What loading it gives: 'dense', 'expert' or 'routed' (a row: the kind of the model it holds)."""
        return "expert" if self.expert else "routed" if self.prune_dir else "dense"

    def one_model(self) -> "ModelRef":
        """Itself, unless it names routed experts (ConfigError: a command that needs one model)."""
        if self.prune_dir:
            raise ConfigError(f"{self.path} holds routed experts (a `prunefit prune` output); this needs one "
                              f"model: pass one of its experts, e.g. {Path(self.prune_dir) / 'experts' / 'expert-0'}")
        return self


def resolve_model(path: str | Path, base: Optional[str] = None) -> ModelRef:
    """The ``ModelRef`` of ``path``. ``base``: the dense model under an expert or routed experts when the
    caller knows it (default: the source model their expert.json / router.json record). A path that is not an
    existing folder is a dense model spec (checked when loaded); an existing folder that holds no model fails
    with one line."""
    path = expert_by_mac(path)
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        return ModelRef("dense", str(path), str(path))
    if (p / "expert.json").is_file():
        return ModelRef("expert", str(path), base or _expert_source(p), expert=str(path))
    if (p / "router" / "router.json").is_file() and (p / "experts").is_dir():
        return ModelRef("routed", str(path), base or _router_source(p), prune_dir=str(path))
    if (p / "model_index.json").is_file():
        return ModelRef("dense", str(path), str(path))
    inner = _row_model(p)
    if inner is not None:
        m = resolve_model(inner, base)
        return ModelRef("row", str(path), m.base, expert=m.expert, prune_dir=m.prune_dir, row=str(path))
    raise ModelLoadError(f"{path} holds no model_index.json, expert.json, router/ or row.json; point at a pipeline, "
                         "an expert, a `prunefit prune` output or an experiment row")


def _row_model(p: Path) -> Optional[str]:
    """The model an experiment row folder holds: row.json's ``model``, else its expert/ or pipeline/."""
    if (p / "row.json").is_file():
        try:
            return str(json.loads((p / "row.json").read_text())["model"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{p / 'row.json'} is corrupt or names no model ({exc}); re-run the experiment "
                                 "row") from None
    if (p / "expert" / "expert.json").is_file():
        return str(p / "expert")
    if (p / "pipeline" / "model_index.json").is_file():
        return str(p / "pipeline")
    return None


def _expert_source(p: Path) -> str:
    from prunefit.pruning.expert import read_expert_info

    return read_expert_info(p).source_model


def _router_source(p: Path) -> str:
    f = p / "router" / "router.json"
    try:
        return str(json.loads(f.read_text())["source_model"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{f} is corrupt or records no source_model ({exc}); re-run `prunefit prune`") from None


def model_components(ref: ModelRef, device: str = "cpu", dtype: str = "float32", base_components=None,
                     source: Optional[str] = None):
    """Components of a dense model, or of an expert over its base (``base_components`` when the caller has
    loaded ``ref.base`` already, else a fresh load), in ``dtype`` on ``device``; ``source`` names the expert's."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert

    if ref.one_model().expert is None:
        return load_components(ref.base, dtype, device)
    comps = base_components if base_components is not None else load_components(ref.base, dtype, device)
    unet, _ = load_expert(ref.expert, comps.unet.config, comps.unet.dtype)
    return comps.with_unet(unet.to(device), source)


def load_student(cfg_student: Optional[str], comps):
    """(trainable student UNet, expert info or None): an expert folder, a plain diffusers UNet folder (e.g. a BK-SDM
    student; info None, so it is saved as a pipeline like the teacher's copy) or a copy of the teacher UNet (the
    students of ``finetune``, ``bilevel`` and ``erase``)."""
    from prunefit.models.unet_folder import is_unet_folder, load_unet_folder
    from prunefit.pruning.expert import load_expert

    if not cfg_student:
        return copy.deepcopy(comps.unet), None
    cfg_student = expert_by_mac(cfg_student)
    if is_unet_folder(cfg_student):
        return load_unet_folder(cfg_student, dict(comps.unet.config)).requires_grad_(False), None
    ref = resolve_model(cfg_student, base=str(comps.source))
    return load_expert(ref.expert or cfg_student, comps.unet.config)


def check_inputs(model: Optional[str] = None, student: Optional[str] = None, expert: Optional[str] = None,
                 experts: Optional[str] = None, cache_dir: Optional[str] = None) -> None:
    """``model``: a loadable model spec; ``student``: an expert or plain diffusers UNet folder; ``expert``: an expert
    folder; ``experts``: a ``prunefit prune`` output (router + experts); ``cache_dir``: a latent cache made with
    ``model``."""
    from prunefit.models.components import check_model_spec

    if model is not None:
        check_model_spec(model)
    for key, path in (("student", student), ("expert", expert)):
        if path:
            _check_expert(key, expert_by_mac(path))
    if experts:
        _check_prune_output(experts)
    if cache_dir:
        from prunefit.data.cache import read_cache_meta

        read_cache_meta(cache_dir, model)


def _check_expert(key: str, path: str) -> None:
    from prunefit.models.unet_folder import check_unet_folder, is_unet_folder
    from prunefit.pruning.expert import check_expert_folder

    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"{key} folder not found: {path} (pass an expert folder, e.g. "
                             "runs/prune/experts/expert-0)")
    if key == "student" and is_unet_folder(p):
        check_unet_folder(p)
        return
    if (p / "arch_vector.pt").is_file() or (p / "quantizer_embeddings.pt").is_file():
        raise ModelLoadError(f"{path} is an APTP checkpoint in its authors' format; import it first: "
                             f"prunefit import aptp {path} -o EXPERT_DIR")
    check_expert_folder(p)


def _check_prune_output(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"experts folder not found: {path} (pass the output_dir of `prunefit prune`)")
    if not (p / "router").is_dir():
        raise ConfigError(f"{path} has no router/: routed generation needs an APTP prune output "
                          "(a magnitude/random prune has no router; use --expert with one of its experts)")
    experts = sorted((p / "experts").glob("expert-*")) if (p / "experts").is_dir() else []
    if not experts:
        raise ModelLoadError(f"{path} has no experts/expert-*; is it a finished `prunefit prune` run?")
    for e in experts:
        _check_expert("expert", str(e))
