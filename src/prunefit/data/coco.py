"""Prepare COCO-2017 val for FID / CLIP evaluation: one caption per image by a fixed rule, resized references.

Rule (saved next to the outputs): for every image, the caption with the **lowest annotation id**.
The official code let 5 captions of an image overwrite each other in a multi-process write race, so
which caption's image survived was undefined; this rule is deterministic and recorded.
References are resized to a square with PIL's bicubic filter, as the official code resized val2017 to
512x512 before computing clean-fid statistics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from PIL import Image
from tqdm.auto import tqdm

from prunefit.errors import DataError

RULE = "lowest-annotation-id"


def select_captions(annotations: Path) -> dict[int, str]:
    """image id -> its caption with the lowest annotation id."""
    try:
        data = json.loads(Path(annotations).read_text())
        anns = data["annotations"]
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {annotations}") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{annotations} is not a COCO captions file (needs an 'annotations' list)") from None
    chosen: dict[int, tuple[int, str]] = {}
    for a in anns:
        img, aid, cap = int(a["image_id"]), int(a["id"]), str(a["caption"]).strip().replace("\n", " ")
        if img not in chosen or aid < chosen[img][0]:
            chosen[img] = (aid, cap)
    return {img: cap for img, (_, cap) in sorted(chosen.items())}


def prepare_coco_val(annotations: Path, images: Optional[Path], output: Path, n: Optional[int] = 5000,
                     size: int = 512) -> dict[str, Path]:
    """Write ``prompts.csv`` (id, prompt), ``selection.json`` (the rule) and ``reference/`` (resized images)."""
    captions = select_captions(annotations)
    ids = sorted(captions)[:n] if n else sorted(captions)
    output.mkdir(parents=True, exist_ok=True)
    with (output / "prompts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prompt"])
        for i in ids:
            w.writerow([f"{i:012d}", captions[i]])
    files = {"prompts": output / "prompts.csv"}
    if images is not None:
        ref = output / "reference"
        ref.mkdir(exist_ok=True)
        for i in tqdm(ids, desc="coco reference", unit="img"):
            src = Path(images) / f"{i:012d}.jpg"
            if not src.is_file():
                raise DataError(f"COCO image missing: {src}")
            dst = ref / f"{i:012d}.png"
            if not dst.is_file():
                with Image.open(src) as im:
                    im.convert("RGB").resize((size, size), Image.BICUBIC).save(dst)
        files["reference"] = ref
    (output / "selection.json").write_text(json.dumps(
        {"rule": RULE, "n": len(ids), "annotations": str(annotations), "reference_size": size,
         "resize": "PIL bicubic, squashed to a square"}, indent=2))
    files["selection"] = output / "selection.json"
    return files
