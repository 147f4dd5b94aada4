"""Training data: the toy world (rendered on the fly), image-caption folders, and COCO-2017 captions.

Every source is indexed by sample: ``samples(start, n)`` returns ``(images [n, 3, H, W] in [-1, 1],
captions)`` for samples start .. start+n-1, each a pure function of (seed, index). So a resumed run
sees exactly the samples it would have, and two micro-batches of 4 are the same samples as one batch
of 8 (gradient accumulation is exactly equivalent). Unreadable images are skipped and counted
(``skipped``), never crash a run: a deterministic substitute row is used in their place.
"""

from __future__ import annotations

import dataclasses
import io
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
    """Toy-world scenes: fresh ones each step (batch ``step`` a pure function of (seed, step)), or, with ``size``, a
    fixed set of ``size`` scenes (a slice of the world when ``shapes`` / ``colours`` / ``backgrounds`` are given)
    shown in a seeded order per epoch."""

    seed: int = 0
    p_artist: float = 0.5
    p_unsafe: float = 0.15
    exclude_artists: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    """The shapes drawn; () = every shape."""
    colours: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    size: int = 0
    """Distinct scenes; 0 = unlimited. Scene j of the fixed set depends on j alone (not on ``seed``), so every run
    sees the same data set; ``seed`` orders each epoch."""
    skipped: int = 0
    _perm_epoch: int = field(default=-1, repr=False)
    _perm: Optional[np.ndarray] = field(default=None, repr=False)

    def _scene(self, i: int):
        from prunefit.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, sample_scene

        rng = np.random.default_rng([self.seed, 7, i] if not self.size else [8, self._index(i)])
        scene = sample_scene(rng, self.p_artist, self.p_unsafe, shapes=self.shapes or SHAPES,
                             colours=self.colours or tuple(COLOURS), backgrounds=self.backgrounds or tuple(BACKGROUNDS))
        if scene.artist in self.exclude_artists:
            scene = dataclasses.replace(scene, artist=None)
        return scene, rng

    def _index(self, i: int) -> int:
        """Sample ``i``'s scene in the fixed set: epoch ``i // size`` is a seeded permutation of the set."""
        epoch, pos = divmod(i, self.size)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 9, epoch]).permutation(self.size)
            self._perm_epoch = epoch
        return int(self._perm[pos])

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
                j = self._index(i + attempt * 7919)
                x = self._row_image(j)
                if x is not None:
                    break
                self.skipped += 1
            else:
                raise DataError(f"64 unreadable images in a row near sample {i}; check the data set")
            images.append(x)
            caps.append(self._row_caption(j, i + attempt * 7919))
        return torch.stack(images), caps

    def _row_image(self, j: int) -> Optional[torch.Tensor]:
        """Row ``j``'s image [3, R, R] in [-1, 1], or None when it cannot be read."""
        return _load_rgb(self.rows[j][0], self.resolution)

    def _row_caption(self, j: int, i: int) -> str:
        """Row ``j``'s caption for sample index ``i``."""
        return self.rows[j][1]


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


def _import_datasets():
    """The optional ``datasets`` package, or a one-line DataError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise DataError("data.source=hf needs the Hugging Face datasets package: pip install 'prunefit[hf]'") from None
    return datasets


@dataclass
class HFRows(CaptionRows):
    """Rows of a Hugging Face ``datasets`` table (image column + caption column), with the same per-epoch seeded
    permutation, centre crop + resize and unreadable-image substitutes as ``CaptionRows``. ``rows`` is the table
    itself (images kept undecoded, read per sample); a caption column holding k captions per row gives, in epoch
    e (sample i = e * rows + position), caption e % k, so each sample stays a function of its index."""

    image_column: str = "image"
    caption_column: str = "text"
    _caps: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._caps = self.rows.select_columns([self.caption_column])

    def _row_caption(self, j: int, i: int) -> str:
        cap = self._caps[j][self.caption_column]
        if isinstance(cap, (list, tuple)):
            if not cap:
                raise DataError(f"row {j} of the dataset has an empty caption list in column {self.caption_column!r}")
            cap = cap[(i // len(self.rows)) % len(cap)]  # epoch e shows caption e % k: each one, in turn
        return str(cap)

    def captions(self, start: int, n: int) -> list[str]:
        """The captions of samples start .. start+n-1 (no image read)."""
        return [self._row_caption(self._index(i), i) for i in range(start, start + n)]

    def _row_image(self, j: int) -> Optional[torch.Tensor]:
        """Row ``j``'s image [3, R, R] in [-1, 1] (from its bytes or path), or None when it cannot be read."""
        img = self.rows[j][self.image_column]
        src = io.BytesIO(img["bytes"]) if img.get("bytes") else img.get("path")
        return _load_rgb(src, self.resolution) if src else None



def hf_dataset(path: str, resolution: int, seed: int = 0, split: str = "train", image_column: str = "image",
               caption_column: str = "text") -> HFRows:
    """A Hugging Face ``datasets`` dataset: a folder saved with ``save_to_disk``, an imagefolder (images +
    ``metadata.jsonl``), or a hub id (needs the network unless it is in the datasets cache)."""
    datasets = _import_datasets()
    folder = Path(path)
    try:
        if folder.is_dir() and ((folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{folder} has no split {split!r}; it has {sorted(ds)}")
                ds = ds[split]
        elif folder.is_dir():
            ds = datasets.load_dataset("imagefolder", data_dir=str(folder), split=split)
        else:
            from huggingface_hub import constants

            if constants.HF_HUB_OFFLINE:
                raise DataError(f"data.path {path!r} is not a local folder and HF_HUB_OFFLINE is set; unset it to "
                                "download the dataset, or point data.path at a saved dataset or an imagefolder")
            ds = datasets.load_dataset(path, split=split)
    except DataError:
        raise
    except Exception as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        hint = "" if folder.is_dir() else "; offline, set HF_HUB_OFFLINE=1 and use a local folder"
        raise DataError(f"cannot load dataset {path!r} split {split!r} ({why}){hint}") from None
    missing = [c for c in (image_column, caption_column) if c not in ds.column_names]
    if missing:
        raise DataError(f"dataset {path!r} has no column {missing[0]!r}; its columns: {ds.column_names} "
                        "(set data.image_column / data.caption_column)")
    if len(ds) == 0:
        raise DataError(f"dataset {path!r} split {split!r} has no rows")
    try:
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    except Exception as exc:
        raise DataError(f"dataset {path!r}: column {image_column!r} does not hold images ({str(exc)[:80]})") from None
    return HFRows(ds, resolution, seed, image_column=image_column, caption_column=caption_column)


def build_data(cfg, resolution: int, seed: int = 0):
    """The data source a ``DataConfig`` names, at ``resolution`` pixels."""
    if cfg.source == "toyworld":
        return ToyWorldData(seed=seed, p_artist=cfg.toy_p_artist, p_unsafe=cfg.toy_p_unsafe,
                            exclude_artists=tuple(cfg.toy_exclude_artists), shapes=tuple(cfg.toy_shapes),
                            colours=tuple(cfg.toy_colours), backgrounds=tuple(cfg.toy_backgrounds), size=cfg.toy_size)
    if cfg.source == "folder":
        return image_caption_folder(cfg.path, resolution, seed)
    if cfg.source == "hf":
        return hf_dataset(cfg.path, resolution, seed, cfg.split, cfg.image_column, cfg.caption_column)
    return coco_captions(cfg.annotations, cfg.images, resolution, seed)
