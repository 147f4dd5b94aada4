"""Keep a Pareto sweep's judged cells in git so the next session resumes it instead of retraining them.

``pack RUN_DIR DEST``: copy every judged cell (``<concept>/cells/<stage>/eval-<n>.json`` and its ``spec.json``) of
a ``prunefit experiment pareto`` output folder into DEST, the per-prompt judge features rounded to 4 decimals
(a 535 kB cell becomes ~200 kB; the FJD of a cell moves by < 1e-3) and the model path dropped (models stay out of
git). ``unpack DEST RUN_DIR``: put them back where the sweep looks for them; cells already there are kept. A cell
whose stage key no longer matches its settings is simply not found by the sweep and is recomputed.

  python scripts/pareto_cells.py pack runs/toyworld/pareto docs/results/pareto_cells
  python scripts/pareto_cells.py unpack docs/results/pareto_cells runs/toyworld/pareto
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def pack(run: Path, dest: Path) -> int:
    n = 0
    for efile in sorted(run.glob("*/cells/*/eval-*.json")):
        cell = json.loads(efile.read_text())
        cell["features"] = [[round(x, 4) for x in row] for row in cell["features"]]
        cell["model"] = None
        out = dest / efile.relative_to(run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cell, separators=(",", ":")))
        spec = efile.parent / "spec.json"
        if spec.is_file():
            shutil.copyfile(spec, out.parent / "spec.json")
        n += 1
    return n


def unpack(dest: Path, run: Path) -> int:
    n = 0
    for efile in sorted(dest.glob("*/cells/*/eval-*.json")):
        target = run / efile.relative_to(dest)
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(efile, target)
        spec = efile.parent / "spec.json"
        if spec.is_file() and not (target.parent / "spec.json").is_file():
            shutil.copyfile(spec, target.parent / "spec.json")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    a = p.parse_args(argv)
    if not a.source.is_dir():
        print(f"pareto_cells: error: {a.source} is not a folder", file=sys.stderr)
        return 2
    n = (pack if a.action == "pack" else unpack)(a.source, a.target)
    print(f"{a.action}ed {n} cell(s) -> {a.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
