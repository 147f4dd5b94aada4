"""Generate images for prompt records into a run folder: images/<id>.png, manifest.jsonl, grid.png.

The folder is resumable and never silently mixed: an id already in the manifest (with its image on
disk) is skipped; an id that was written with other settings, another model or another prompt is an
error rather than an overwrite. Images are written atomically (temporary file, then rename) before
their manifest line, so an interrupted run leaves no half-written image that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from PIL import Image
from tqdm.auto import tqdm

from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import PromptRecord
from prunefit.errors import OutputError
from prunefit.generation.grid import image_grid
from prunefit.generation.manifest import MANIFEST, read_manifest
from prunefit.generation.seeds import generators, prompt_seed
from prunefit.models.components import Components, make_pipeline
from prunefit.models.schedulers import make_scheduler
from prunefit.utils.faults import fault_pause


@dataclass
class GenerationResult:
    """What a generation run did: where, how many images new and reused, and the files written."""

    output_dir: Path
    generated: int
    skipped: int
    manifest: Path
    grid: Optional[Path]

    def lines(self) -> list[str]:
        grid = [f"grid: {self.grid}"] if self.grid else []
        return [f"generated {self.generated} image(s), reused {self.skipped} -> {self.output_dir / 'images'}",
                f"manifest: {self.manifest}", *grid]


def sampling_settings(sampler: SamplerConfig) -> dict[str, Any]:
    """The sampler settings that determine an image (batch size only changes speed)."""
    return {k: v for k, v in asdict(sampler).items() if k != "batch_size"}


def resolve_sampler(sampler: SamplerConfig, components: Components) -> SamplerConfig:
    """``sampler`` with an unset guidance scale filled from the model's default."""
    if sampler.guidance_scale is not None:
        return sampler
    return replace(sampler, guidance_scale=components.default_guidance)


def sample_images(components: Components, records: list[PromptRecord], sampler: SamplerConfig, seeds: list[int],
                  device: str = "cpu") -> list[Image.Image]:
    """Images for ``records`` in one pipeline call; ``seeds[i]`` seeds prompt i's own generator."""
    sampler = resolve_sampler(sampler, components)
    pipe = make_pipeline(components, make_scheduler(sampler.scheduler, components.scheduler.config))
    with torch.inference_mode():
        out = pipe(
            prompt=[r.prompt for r in records],
            negative_prompt=[sampler.negative_prompt] * len(records) if sampler.negative_prompt else None,
            num_inference_steps=sampler.steps,
            guidance_scale=sampler.guidance_scale,
            height=sampler.height,
            width=sampler.width,
            generator=generators(seeds, "cpu" if str(device).startswith("mps") else device),
            output_type="pil",
        )
    return out.images


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _write_png(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    fault_pause("IMAGE", int(path.stem) if path.stem.isdigit() else -1)  # kill tests: a written, unnamed image
    os.replace(tmp, path)


def prepare_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` (and images/) or fail with a message saying what to fix."""
    try:
        (output_dir / "images").mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {output_dir} ({exc.strerror or exc}); "
                          "choose a writable output_dir") from None


def generate_run(components: Components, records: list[PromptRecord], sampler: SamplerConfig, run_seed: int,
                 output_dir: Path, device: str = "cpu", grid_max_images: int = 64,
                 expert: Optional[int] = None) -> GenerationResult:
    """Generate every record not yet in ``output_dir``'s manifest, then (re)write the contact sheet."""
    prepare_output_dir(output_dir)
    sampler = resolve_sampler(sampler, components)  # the manifest records the scale really used
    manifest_path = output_dir / MANIFEST
    done = read_manifest(manifest_path)
    settings = sampling_settings(sampler)
    todo: list[tuple[PromptRecord, int]] = []
    for rec in records:
        seed = prompt_seed(run_seed, rec.id, rec.seed)
        prev = done.get(rec.id)
        if prev is not None and (output_dir / "images" / f"{rec.id}.png").is_file():
            theirs = (prev.get("prompt"), prev.get("seed"), prev.get("model"), prev.get("settings"))
            if theirs != (rec.prompt, seed, components.source, settings):
                raise OutputError(f"{output_dir} already holds image {rec.id!r} made with another prompt, seed, "
                                  "model or sampler settings; use a new output_dir (nothing was overwritten)")
            continue
        todo.append((rec, seed))

    with manifest_path.open("a", encoding="utf-8") as manifest, \
            tqdm(total=len(todo), desc="generate", unit="img", disable=not todo) as bar:
        for batch in _batches(todo, sampler.batch_size):
            images = sample_images(components, [r for r, _ in batch], sampler, [s for _, s in batch], device)
            for (rec, seed), img in zip(batch, images):
                _write_png(img, output_dir / "images" / f"{rec.id}.png")
                row = {"id": rec.id, "prompt": rec.prompt, "seed": seed, "model": components.source,
                       "expert": expert, "settings": settings, **({"extra": rec.extra} if rec.extra else {})}
                manifest.write(json.dumps(row) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())
            bar.update(len(batch))

    grid_path = None
    if grid_max_images:
        rows = list(read_manifest(manifest_path).values())[:grid_max_images]
        if rows:
            imgs = [Image.open(output_dir / "images" / f"{r['id']}.png") for r in rows]
            grid_path = output_dir / "grid.png"
            _write_png(image_grid(imgs, labels=[r["prompt"] for r in rows] if imgs[0].size[0] >= 96 else None),
                       grid_path)
    return GenerationResult(output_dir=output_dir, generated=len(todo), skipped=len(records) - len(todo),
                            manifest=manifest_path, grid=grid_path)
