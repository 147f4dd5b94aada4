"""``prunefit experiment <name>``: run a study and return what the console shows when it finishes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from prunefit.experiments.common.stages import concept_slug
from prunefit.models.card import write_card

REPORTS = {"table3": (True, ()), "erasure": (False, ()), "pareto": (True, ("plot:pareto.png",)),
           "distillation": (False, ("curves:curves.png",))}
"""Per study that writes ``report.md``: one report per concept (``<output>/<concept>/report.md``) rather than one in
the output folder, and the other outputs beside each report (``name:file``, printed as ``name: path``). A study not
listed (figures) returns a result with its own ``lines()``."""


def main(cfg, log: Callable[[str], None] = print) -> list[str]:
    """Run the study ``cfg`` configures (its class sits in ``experiments/<name>/config.py``), progress to ``log``;
    the text of each report it wrote, its path and the outputs beside it."""
    name = type(cfg).__module__.split(".")[-2]
    run = importlib.import_module(f"prunefit.experiments.{name}.run")
    if name not in REPORTS:
        return run.main(cfg).lines()
    per_concept, extras = REPORTS[name]
    results = run.main(cfg, log=log)
    root = Path(cfg.output_dir)
    write_card(root)
    out = []
    for folder in [root / concept_slug(c) for c in results] if per_concept else [root]:
        if not (folder / "report.md").is_file():  # a single stage (table3 only=<row>): its log says where it went
            continue
        out += [(folder / "report.md").read_text(), f"report: {folder / 'report.md'}"]
        out += [f"{label}: {folder / file}" for label, _, file in (extra.partition(":") for extra in extras)]
    return out
