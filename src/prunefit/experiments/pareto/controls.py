"""The Pareto sweep's control rows: a bilevel point's upper operator alone after distillation, and ESD followed by a
short re-distillation.

- ``sequential``: the distilled student, then the upper step of a bilevel point (the official preset's operator: its
  learning rate, parameter subset, batch, x_t source, conditioning and vocabulary, the unpruned teacher as the
  reference) run alone as ``prunefit erase`` for a number of steps. Against the bilevel point it separates the
  schedule (joint or sequential) from the operator. One difference is kept on purpose and stated: the erase run has
  no learning-rate warm-up (the bilevel upper step warms up over ``upper_warmup_steps``).
- ``redistil``: Distilled + ESD (the two-stage row at the point's ESD iterations, reused from its cell), then
  ``redistil_steps`` more lower-level (distillation) steps from the erased student against the unpruned teacher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

from prunefit.experiments.table3.run import Table3


def _operator(t3: Table3, concept: str):
    """(the bilevel config of ``t3``'s ESD row, its resolved upper ESD section with the upper step's lr as its own:
    the upper optimizer's, or the one optimizer's where there is no other)."""
    b = t3.bilevel_config("esd", concept, Path("-"), Path("-"))
    return b, dataclasses.replace(b.resolved.upper, lr=b.resolved.upper_lr or b.train.lr)


def sequential_spec(t3: Table3, concept: str, steps: int) -> dict:
    """Every setting the sequential control's model depends on."""
    _, op = _operator(t3, concept)
    return {**t3.distil_spec(concept), "row": "sequential", "concept": concept, "steps": steps,
            "operator": {**asdict(op), "iterations": steps}, "reference": "teacher"}


def run_sequential(t3: Table3, concept: str, steps: int, croot: Path, start: Path, out: Path) -> Path:
    """The distilled student, then the upper operator alone for ``steps`` steps into ``out`` (reused when
    finished, resumed when interrupted); returns the edited expert."""
    from prunefit.config.sections import build
    from prunefit.recipes import erase
    from prunefit.removal.config import EraseConfig, RemovalSection

    if (out / "erase_summary.json").is_file():
        return out / "expert"
    distilled = t3.distilled(concept, croot, start)
    _, op = _operator(t3, concept)
    c = t3.cfg
    cfg = build(EraseConfig, model=c.model, student=str(distilled), output_dir=str(out), seed=c.seed,
                device=c.device, removal=RemovalSection(method="esd", concepts=[concept], reference="teacher"),
                esd=dataclasses.replace(op, iterations=steps),
                resume="latest" if (out / "checkpoints").is_dir() else None)
    return erase.main(cfg).model_path


def redistil_spec(t3: Table3, concept: str, steps: int) -> dict:
    """Every setting the re-distilled model depends on."""
    return {**t3.row_spec("distilled+esd", concept), "row": "redistil", "redistil_steps": steps}


def run_redistil(t3: Table3, concept: str, steps: int, croot: Path, start: Path, out: Path) -> Path:
    """Distilled + ESD (its cell reused), then ``steps`` lower-level steps from the erased student into ``out``."""
    erased, _ = t3.run_row("distilled+esd", concept, croot, start)
    short = Table3(dataclasses.replace(t3.cfg, lower_steps=steps), t3.log)
    return short.train_distilled(Path(erased), out, t3.lower_data(concept))
