"""Generate images for prompt records into a run folder: images/<id>.png, manifest.jsonl, grid.png.

The folder is resumable and never silently mixed: an id already in the manifest (with its image on
disk) is skipped; an id that was written with other settings, another model or another prompt is an
error rather than an overwrite, and so is adding images made on another device type or dtype (the initial
noise is drawn on the CPU, the same everywhere, but the UNet's numerics are not). Images are written atomically
(temporary file, then rename) before their manifest line, so an interrupted run leaves no half-written image that
looks complete. Under several processes each rank makes its share of the prompts and rank 0 merges the manifest
(``generation.ranks``): the folder equals a one-process run's.
"""

from __future__ import annotations

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
from prunefit.generation.ranks import Ranks, current_ranks, merge_parts
from prunefit.generation.seeds import generators, prompt_seed
from prunefit.models.components import Components, make_pipeline
from prunefit.models.schedulers import make_scheduler
from prunefit.utils.faults import fault_pause
from prunefit.utils.io import append_jsonl, atomic_file, open_jsonl_append


@dataclass
class GenerationResult:
    """What a generation run did: where, how many images new and reused, and the files written."""

    output_dir: Path
    generated: int
    skipped: int
    manifest: Path
    grid: Optional[Path]

    def lines(self) -> list[str]:
        """What the run did, for the console: images generated and reused, manifest, grid."""
        grid = [f"grid: {self.grid}"] if self.grid else []
        return [f"generated {self.generated} image(s), reused {self.skipped} -> {self.output_dir / 'images'}",
                f"manifest: {self.manifest}", *grid]


def sampling_settings(sampler: SamplerConfig) -> dict[str, Any]:
    """The sampler settings that determine an image (batch size only changes speed)."""
    return {k: v for k, v in asdict(sampler).items() if k != "batch_size"}


def made_with(device: str | torch.device, dtype: torch.dtype) -> dict[str, str]:
    """The device type and dtype an image was made with, as the manifest's settings record them."""
    return {"device": torch.device(device).type, "dtype": str(dtype).removeprefix("torch.")}


def check_same_device(output_dir: Path, rows, ours: dict[str, str]) -> None:
    """Refuse to add images made on another device type or dtype to a folder (rows without ``device`` are CPU
    images from before it was recorded; rows without ``dtype`` are checked by the run's resolved config)."""
    for row in rows:
        theirs = row.get("settings") or {}
        device, dtype = theirs.get("device", "cpu"), theirs.get("dtype", ours["dtype"])
        if (device, dtype) != (ours["device"], ours["dtype"]):
            raise OutputError(f"{output_dir} holds images made on {device} ({dtype}); this run is on "
                              f"{ours['device']} ({ours['dtype']}): use a new output_dir (nothing was overwritten)")


def resolve_sampler(sampler: SamplerConfig, components: Components) -> SamplerConfig:
    """``sampler`` with an unset guidance scale filled from the model's default."""
    if sampler.guidance_scale is not None:
        return sampler
    return replace(sampler, guidance_scale=components.default_guidance)


def sample_images(components: Components, records: list[PromptRecord], sampler: SamplerConfig,
                  seeds: list[int]) -> list[Image.Image]:
    """Images for ``records`` in one pipeline call on the components' device; ``seeds[i]`` seeds prompt i's own
    CPU generator (the same initial noise on every device)."""
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
            generator=generators(seeds),
            output_type="pil",
        )
    return out.images


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _write_png(img: Image.Image, path: Path) -> None:
    with atomic_file(path) as tmp:
        img.save(tmp, format="PNG")
        fault_pause("IMAGE", int(path.stem) if path.stem.isdigit() else -1)  # kill tests: a written, unnamed image


def prepare_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` (and images/) or fail with a message saying what to fix."""
    try:
        (output_dir / "images").mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write_probe.{os.getpid()}"  # one per process: ranks probe the folder together
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {output_dir} ({exc.strerror or exc}); "
                          "choose a writable output_dir") from None


def generate_run(components: Components, records: list[PromptRecord], sampler: SamplerConfig, run_seed: int,
                 output_dir: Path, device: str = "cpu", grid_max_images: int = 64,
                 expert: Optional[int] = None, ranks: Optional[Ranks] = None) -> GenerationResult:
    """Generate every record not yet in ``output_dir``'s manifest (this rank's share of them), then (re)write the
    contact sheet. Every rank of a launch calls it with the same records; it returns when the manifest is merged."""
    ranks = ranks or current_ranks(device)
    prepare_output_dir(output_dir)
    sampler = resolve_sampler(sampler, components)  # the manifest records the scale really used
    manifest_path = output_dir / MANIFEST
    if ranks.main:
        merge_parts(manifest_path)  # rows of a killed multi-process run
    ranks.barrier()
    done = read_manifest(manifest_path)
    settings = sampling_settings(sampler)
    made = made_with(device, components.unet.dtype)
    check_same_device(output_dir, done.values(), made)
    todo: list[tuple[PromptRecord, int]] = []
    for rec in records:
        seed = prompt_seed(run_seed, rec.id, rec.seed)
        prev = done.get(rec.id)
        if prev is not None and (output_dir / "images" / f"{rec.id}.png").is_file():
            theirs_settings = {k: v for k, v in (prev.get("settings") or {}).items() if k not in made}
            theirs = (prev.get("prompt"), prev.get("seed"), prev.get("model"), theirs_settings)
            if theirs != (rec.prompt, seed, components.source, settings):
                raise OutputError(f"{output_dir} already holds image {rec.id!r} made with another prompt, seed, "
                                  "model or sampler settings; use a new output_dir (nothing was overwritten)")
            continue
        todo.append((rec, seed))

    mine = ranks.share(todo)
    with open_jsonl_append(ranks.part(manifest_path)) as manifest, \
            tqdm(total=len(mine), desc="generate", unit="img", disable=not mine or not ranks.main) as bar:
        for batch in _batches(mine, sampler.batch_size):
            images = sample_images(components, [r for r, _ in batch], sampler, [s for _, s in batch])
            rows = []
            for (rec, seed), img in zip(batch, images):
                _write_png(img, output_dir / "images" / f"{rec.id}.png")
                rows.append({"id": rec.id, "prompt": rec.prompt, "seed": seed, "model": components.source,
                             "expert": expert, "settings": {**settings, **made},
                             **({"extra": rec.extra} if rec.extra else {})})
            append_jsonl(manifest, rows)
            bar.update(len(batch))
    ranks.barrier()
    if ranks.world > 1 and ranks.main:
        merge_parts(manifest_path, [rec.id for rec, _ in todo])  # the one-process row order

    grid_path = None
    if grid_max_images and ranks.main:
        rows = list(read_manifest(manifest_path).values())[:grid_max_images]
        if rows:
            imgs = [Image.open(output_dir / "images" / f"{r['id']}.png") for r in rows]
            grid_path = output_dir / "grid.png"
            _write_png(image_grid(imgs, labels=[r["prompt"] for r in rows] if imgs[0].size[0] >= 96 else None),
                       grid_path)
    ranks.barrier()  # every rank returns with the merged manifest on disk
    return GenerationResult(output_dir=output_dir, generated=len(todo), skipped=len(records) - len(todo),
                            manifest=manifest_path, grid=grid_path)
