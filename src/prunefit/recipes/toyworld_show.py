"""Write sample grids of the toy-world teacher: one per prompt set (neutral, each artist, the unsafe concept)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from prunefit.config.schema import SamplerConfig
from prunefit.errors import ModelLoadError
from prunefit.generation.grid import image_grid
from prunefit.generation.toyworld_quality import generate_rows, read_rows
from prunefit.models.components import load_components
from prunefit.toyworld.paths import assets_dir as default_assets_dir


@dataclass
class ShowResult:
    """``prunefit toyworld show``: the model card's text and the sample grids written."""

    card: str
    grids: list[Path]

    def summary(self) -> str:
        """The card's text and the grid paths, for the console."""
        return self.card + "\nsample grids:\n" + "\n".join(f"  {p}" for p in self.grids)

    def lines(self) -> list[str]:
        """``summary()`` as the console's lines."""
        return [self.summary()]


def show(assets: Optional[Path] = None, output: Path = Path("runs/toyworld-show"), per_grid: int = 16,
         seed: int = 0) -> ShowResult:
    """The card of the toy world at ``assets`` (default: the shipped one) and a sample grid per prompt set."""
    assets = Path(assets) if assets else default_assets_dir()
    card = assets / "MODEL_CARD.md"
    if not card.is_file():
        raise ModelLoadError(f"no toy world at {assets}; run `prunefit toyworld build` first")
    return ShowResult(card.read_text(), write_sample_grids(assets, Path(output), per_grid=per_grid, seed=seed))


def write_sample_grids(assets: Path, output: Path, per_grid: int = 16, seed: int = 0) -> list[Path]:
    """Sample a grid of the teacher's images per prompt set (toy-val first) into ``output``, with each grid's prompts;
    returns the grid paths."""
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
