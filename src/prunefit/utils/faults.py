"""Fault injection for the kill tests: ``fault_pause("STEP", i)`` sleeps where a test wants to SIGKILL a run.

``PRUNEFIT_FAULT_<KIND>_SLEEP=<seconds>[@<index>]`` pauses at the given index (every index without ``@``);
``PRUNEFIT_FAULT_MARK=<path>`` is created when the pause begins, so the test kills a process that is provably
inside it. Unset (always, outside tests), this is one dictionary lookup.

The one fault-injection mechanism; the pauses in the code: ``STEP`` (training/loop.py: gradients computed, weights
not yet updated; index = global step), ``CHECKPOINT`` (training/checkpoint.py: weights written into the temporary
checkpoint folder, the rest not; index = step) and ``IMAGE`` (generation/sample.py: an image written under its
temporary name; index = the numeric image id).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def fault_pause(kind: str, index: int) -> None:
    """Sleep as ``PRUNEFIT_FAULT_<kind>_SLEEP`` says when it names ``index`` (or no index); else return at once."""
    spec = os.environ.get(f"PRUNEFIT_FAULT_{kind}_SLEEP")
    if not spec:
        return
    seconds, _, at = spec.partition("@")
    if at and int(at) != index:
        return
    mark = os.environ.get("PRUNEFIT_FAULT_MARK")
    if mark:
        Path(mark).write_text(f"{kind} {index} pid {os.getpid()}\n")
    time.sleep(float(seconds))
