"""Training data: the toy world (rendered on the fly), image-caption folders, and COCO-2017 captions.

Every source is indexed by sample: ``samples(start, n)`` returns ``(images [n, 3, H, W] in [-1, 1],
captions)`` for samples start .. start+n-1, each a pure function of (seed, index). So a resumed run
sees exactly the samples it would have, and two micro-batches of 4 are the same samples as one batch
of 8 (gradient accumulation is exactly equivalent). Unreadable images are skipped and counted
(``skipped``), never crash a run: a deterministic substitute row is used in their place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from prunefit.errors import DataError
from prunefit.utils.io import jsonl_lines


@dataclass
class ToyWorldData:
    """Fresh toy-world scenes each step: batch ``step`` is a pure function of (seed, step)."""

    seed: int = 0
    p_artist: float = 0.5
    p_unsafe: float = 0.15
    exclude_artists: tuple[str, ...] = ()
    skipped: int = 0

    def _scene(self, i: int):
        from prunefit.toyworld.world import sample_scene

        rng = np.random.default_rng([self.seed, 7, i])
        scene = sample_scene(rng, self.p_artist, self.p_unsafe)
        if scene.artist in self.exclude_artists:
            scene = dataclasses.replace(scene, artist=None)
        return scene, rng

    def captions(self, start: int, n: int) -> list[str]:
        """The captions of samples [start, start + n) without rendering."""
        from prunefit.toyworld.world import caption

        out = []
        for i in range(start, start + n):
            scene, rng = self._scene(i)
            out.append(caption(scene, rng))
        return out

    def samples(self, start: int, n: int) -> tuple[torch.Tensor, list[str]]:
        """Rendered scenes start .. start+n-1 as images [n, 3, H, W] in [-1, 1], and their captions."""
        from prunefit.toyworld.world import caption, render

        imgs, caps = [], []
        for i in range(start, start + n):
            scene, rng = self._scene(i)
            imgs.append(render(scene))
            caps.append(caption(scene, rng))
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0, caps


def _load_rgb(path: Path, resolution: int) -> Optional[torch.Tensor]:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            im = im.resize((resolution, resolution), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32)
    except Exception:  # truncated, corrupt or unreadable files are skipped and counted
        return None
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


@dataclass
class CaptionRows:
    """(image path, caption) rows, shuffled by a seeded permutation per epoch; centre crop + resize."""

    rows: list[tuple[Path, str]]
    resolution: int
    seed: int = 0
    skipped: int = 0
    _perm_epoch: int = field(default=-1, repr=False)
    _perm: Optional[np.ndarray] = field(default=None, repr=False)

    def _index(self, i: int) -> int:
        epoch, pos = divmod(i, len(self.rows))
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def captions(self, start: int, n: int) -> list[str]:
        """The captions of samples start .. start+n-1 (no image read)."""
        return [self.rows[self._index(i)][1] for i in range(start, start + n)]

    def samples(self, start: int, n: int) -> tuple[torch.Tensor, list[str]]:
        """Images [n, 3, R, R] in [-1, 1] of samples start .. start+n-1 and their captions; unreadable images are
        replaced by deterministic substitutes and counted in ``skipped``."""
        images, caps = [], []
        for i in range(start, start + n):
            for attempt in range(64):  # an unreadable row is replaced by a deterministic substitute
                path, cap = self.rows[self._index(i + attempt * 7919)]
                x = _load_rgb(path, self.resolution)
                if x is not None:
                    break
                self.skipped += 1
            else:
                raise DataError(f"64 unreadable images in a row near sample {i}; check the data set")
            images.append(x)
            caps.append(cap)
        return torch.stack(images), caps


def image_caption_folder(folder: str | Path, resolution: int, seed: int = 0) -> CaptionRows:
    """A folder with ``metadata.jsonl`` rows ``{"file_name": ..., "text"|"caption": ...}`` (the diffusers
    ImageFolder convention)."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise DataError(f"{folder} has no metadata.jsonl (rows with file_name and text)")
    rows = []
    for n, r in jsonl_lines(meta):
        try:
            rows.append((folder / r["file_name"], str(r.get("text", r.get("caption")))))
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{meta}: line {n} needs 'file_name' and 'text'") from None
    if not rows:
        raise DataError(f"{meta} lists no images")
    return CaptionRows(rows, resolution, seed)


def coco_captions(annotations: str | Path, images: str | Path, resolution: int, seed: int = 0) -> CaptionRows:
    """COCO-2017 captions: one row per caption (about 5 per image), images from ``images``."""
    try:
        data = json.loads(Path(annotations).read_text())
        files = {int(im["id"]): im["file_name"] for im in data["images"]}
        rows = [(Path(images) / files[int(a["image_id"])], str(a["caption"]).strip()) for a in data["annotations"]]
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {annotations}") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{annotations} is not a COCO captions file") from None
    return CaptionRows(rows, resolution, seed)


def build_data(cfg, resolution: int, seed: int = 0):
    """The data source a ``DataConfig`` names, at ``resolution`` pixels."""
    if cfg.source == "toyworld":
        return ToyWorldData(seed=seed, p_artist=cfg.toy_p_artist, p_unsafe=cfg.toy_p_unsafe,
                            exclude_artists=tuple(cfg.toy_exclude_artists))
    if cfg.source == "folder":
        return image_caption_folder(cfg.path, resolution, seed)
    return coco_captions(cfg.annotations, cfg.images, resolution, seed)
