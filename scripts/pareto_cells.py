"""Keep a Pareto sweep's judged cells in git so the next session resumes it instead of retraining them.

``pack RUN_DIR DEST``: copy every judged cell (``<concept>/cells/<stage>/eval-<n>.json`` and its ``spec.json``) of
a ``prunefit experiment pareto`` output folder into DEST, the per-prompt judge features rounded to 4 decimals
(a 535 kB cell becomes ~200 kB; the FJD of a cell moves by < 1e-3) and the model path dropped (models stay out of
git). ``unpack DEST RUN_DIR``: put them back where the sweep looks for them; cells already there are kept. A cell
whose stage key no longer matches its settings is simply not found by the sweep and is recomputed.

  python scripts/pareto_cells.py pack runs/toyworld/pareto docs/results/pareto_cells
  python scripts/pareto_cells.py unpack docs/results/pareto_cells runs/toyworld/pareto

``rekey ROOT``: move the stage folders under ROOT (runs or packed cells) whose spec.json recorded the resolved
device of a bilevel row (``bilevel.device``: "cpu", before the device left the stage key) to the key their
settings have now, rewriting their spec.json and the model paths their judged files hold; a stage whose new folder
exists already is left as it is.

  python scripts/pareto_cells.py rekey docs/results/decisive_cells
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


def rekey(root: Path, _unused: Path | None = None) -> int:
    from prunefit.experiments.common.stages import stage_key

    n = 0
    for sfile in sorted(root.rglob("spec.json")):
        spec = json.loads(sfile.read_text())
        if not isinstance(spec.get("bilevel"), dict) or spec["bilevel"].get("device") is None:
            continue
        old = sfile.parent
        name, _, _ = old.name.rpartition("-")
        spec["bilevel"]["device"] = None
        new = old.with_name(f"{name}-{stage_key(spec)}")
        if new.exists():
            print(f"pareto_cells: {new} exists; {old} left as it is", file=sys.stderr)
            continue
        for f in old.glob("*.json"):  # judged files name their model by its folder
            f.write_text(f.read_text().replace(f"/{old.name}/", f"/{new.name}/"))
        sfile.write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
        old.rename(new)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["pack", "unpack", "rekey"])
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path, nargs="?", help="pack / unpack: where the cells go")
    a = p.parse_args(argv)
    if not a.source.is_dir():
        print(f"pareto_cells: error: {a.source} is not a folder", file=sys.stderr)
        return 2
    if a.action != "rekey" and a.target is None:
        print(f"pareto_cells: error: {a.action} needs a target folder", file=sys.stderr)
        return 2
    n = {"pack": pack, "unpack": unpack, "rekey": rekey}[a.action](a.source, a.target)
    print(f"{a.action}ed {n} cell(s) -> {a.target or a.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
