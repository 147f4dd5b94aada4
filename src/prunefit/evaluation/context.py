"""What a metric reads: the run's manifest rows and their images (loaded once), plus its config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from prunefit.errors import DataError
from prunefit.evaluation.fid import load_image
from prunefit.generation.manifest import MANIFEST, read_manifest
from prunefit.utils.device import as_device


@dataclass
class MetricResult:
    """Named values of one metric and the protocol that produced them (recorded in results.json)."""

    values: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    per_image: dict[str, Any] = field(default_factory=dict)
    """Optional per-id details (e.g. which prompts were flagged); written beside results.json as
    ``<stem>.<metric>.per_image.json``."""
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    """Optional per-image arrays too large for JSON (FID: the generated images' features [N, D]); written beside
    results.json as ``<stem>.<metric>.safetensors``."""


def read_manifest_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Manifest rows in file order (last row of an id wins), with a teaching error when absent, torn or empty."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"no manifest.jsonl in {run_dir}; point run_dir at a folder written by `prunefit generate`")
    rows = read_manifest(path, torn_tail="refuse", require=("prompt",))
    if not rows:
        raise DataError(f"{path} lists no images")
    return list(rows.values())


@dataclass
class EvalContext:
    """A generation run to evaluate: its rows and (lazily) its images as uint8 [N, 3, H, W]."""

    run_dir: Path
    rows: list[dict[str, Any]]
    device: str = "auto"
    """auto (the default, as every config's): resolved by ``utils.device.as_device`` when the context is made."""
    _images: Optional[torch.Tensor] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = as_device(self.device)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> "EvalContext":
        """The context of a generation run folder, from its manifest."""
        run_dir = Path(run_dir)
        return cls(run_dir, read_manifest_rows(run_dir), device)

    @property
    def ids(self) -> list[str]:
        """The run's image ids, in manifest order."""
        return [str(r["id"]) for r in self.rows]

    @property
    def prompts(self) -> list[str]:
        """The run's prompts, in manifest order."""
        return [r["prompt"] for r in self.rows]

    def image_path(self, rid: str) -> Path:
        """Where the image of id ``rid`` lives."""
        return self.run_dir / "images" / f"{rid}.png"

    def images(self) -> torch.Tensor:
        """The run's images as uint8 [N, 3, H, W], loaded once (an error names a missing image)."""
        if self._images is None:
            arrs = []
            for rid in self.ids:
                path = self.image_path(rid)
                if not path.is_file():
                    raise DataError(f"manifest lists {rid!r} but {path} is missing; re-run the same "
                                    "`prunefit generate` command to finish the run")
                arrs.append(load_image(path))
            if len({a.shape for a in arrs}) > 1:
                raise DataError(f"images in {self.run_dir} have different sizes; evaluate one resolution at a time")
            self._images = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
        return self._images

    def extra(self, key: str) -> list[Any]:
        """Per-row values of a prompt-file column kept in the manifest's ``extra`` (None where absent)."""
        return [(r.get("extra") or {}).get(key) for r in self.rows]

    def model(self) -> str:
        """The one model that generated the run (an error if rows name several)."""
        models = {r.get("model") for r in self.rows}
        if len(models) != 1:
            raise DataError(f"{self.run_dir} mixes models {sorted(map(str, models))}")
        return str(models.pop())
