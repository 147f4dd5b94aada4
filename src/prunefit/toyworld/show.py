"""Write sample grids of the toy-world teacher: one per artist and one for the unsafe concept."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from prunefit.config.schema import SamplerConfig
from prunefit.generation.grid import image_grid
from prunefit.models.components import load_components
from prunefit.toyworld.quality import generate_rows, read_rows


def write_sample_grids(assets: Path, output: Path, per_grid: int = 16, seed: int = 0) -> list[Path]:
    components = load_components(str(assets / "teacher"))
    output.mkdir(parents=True, exist_ok=True)
    sampler = SamplerConfig(batch_size=per_grid)
    paths = []
    for name in ["toy-val"] + sorted(p.stem for p in (assets / "prompts").glob("*.jsonl") if p.stem != "toy-val"):
        rows = read_rows(assets / "prompts" / f"{name}.jsonl", per_grid)
        imgs = generate_rows(components, rows, sampler, desc=name)
        pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in imgs]
        path = output / f"{name}.png"
        image_grid(pil, cell=96).save(path)
        (output / f"{name}.prompts.json").write_text(json.dumps([r["prompt"] for r in rows], indent=1))
        paths.append(path)
    return paths
