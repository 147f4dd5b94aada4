"""results.json: metric values with their protocol, the run's generation settings and package versions.

A results file is merged, never silently overwritten: re-running a metric with the same protocol
replaces its entry (same numbers, fresh timestamp); a different protocol for a metric already in the
file is refused, so an earlier result cannot be replaced by an incomparable one. A metric's per-image details
and arrays go beside it (``<stem>.<metric>.per_image.json``, ``<stem>.<metric>.safetensors``), replaced with it.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

from prunefit.errors import OutputError
from prunefit.evaluation.registry import MetricResult
from prunefit.utils.io import atomic_file, atomic_write_json


def package_versions() -> dict[str, str]:
    """Python's and the key packages' installed versions, for the results' provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("prunefit", "torch", "diffusers", "transformers", "torchmetrics", "nudenet"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


RUN_KEYS = ("model", "n", "generation")
"""Header keys that must match for results to be merged into an existing file (one file = one run)."""


def read_results(path: Path) -> dict[str, Any]:
    """An existing results file ({} when absent); an error if it is not a prunefit results file."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OutputError(f"{path} is not valid JSON; move it aside before evaluating into it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise OutputError(f"{path} is not a prunefit results file (no 'metrics' mapping); move it aside or write "
                          "to a new file with output=...")
    return doc


def check_results_target(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The existing document at ``path`` (or {}), refused if it is unreadable or holds another run's results."""
    doc = read_results(path)
    diff = [k for k in RUN_KEYS if k in doc and json.loads(json.dumps(doc[k], default=str))
            != json.loads(json.dumps(header.get(k), default=str))]
    if diff:
        raise OutputError(f"{path} holds results of another run (different {', '.join(diff)}); write to a new file "
                          "with output=... (nothing was overwritten)")
    return doc


def merge_results(path: Path, header: dict[str, Any], results: dict[str, MetricResult]) -> dict[str, Any]:
    """Merge ``results`` into the file at ``path`` (atomic write) and return the whole document."""
    doc = check_results_target(path, header) or {"metrics": {}}
    for name, res in results.items():
        old = doc["metrics"].get(name)
        if old is not None and old.get("protocol") != res.protocol:
            raise OutputError(f"{path} already holds '{name}' measured with another protocol; write to a new "
                              "file with output=... (nothing was overwritten)")
    doc.update(header)
    doc["versions"] = package_versions()
    for name, res in results.items():
        doc["metrics"][name] = {"values": res.values, "protocol": res.protocol,
                                "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc, indent=2, default=str)
    for name, res in results.items():
        side = path.parent / f"{path.stem}.{name}.per_image.json"
        if res.per_image:
            side.write_text(json.dumps(res.per_image, indent=1))
        else:
            side.unlink(missing_ok=True)  # an earlier measurement's details must not outlive its entry
        tensors = path.parent / f"{path.stem}.{name}.safetensors"
        if res.arrays:
            from safetensors.torch import save_file

            with atomic_file(tensors) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in res.arrays.items()}, str(tmp))
        else:
            tensors.unlink(missing_ok=True)
    return doc
