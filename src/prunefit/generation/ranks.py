"""Share a run's prompts across the processes of `accelerate launch` / torchrun and merge their per-rank files.

Rank r takes items r, r+W, r+2W, ... of the work still to do (strided, not contiguous shards: prompt files are
often grouped by concept, length or routed expert, and a stride gives every rank the same mix, so no rank idles
while another finishes the slow block). Each rank appends its rows to ``<name>.rank-<r>.jsonl``; after a barrier
rank 0 merges them into ``<name>.jsonl`` (an atomic rewrite, rows in the one-process order) and deletes them. The
merged file is the source of truth: parts left by a killed run are merged at the next start, whatever the number
of processes then. A single process writes ``<name>.jsonl`` directly, as it always did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from prunefit.utils.io import atomic_write_text, read_jsonl


@dataclass(frozen=True)
class Ranks:
    """This process's rank and the number of processes (accelerate's ``PartialState`` under a launcher)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that merges and reports)."""
        return self.rank == 0

    def share(self, items: Sequence) -> list:
        """This rank's items: ``items[rank::world]``."""
        return list(items[self.rank :: self.world])

    def barrier(self) -> None:
        """Wait for every process (a no-op with one)."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def gather(self, mine: list) -> list:
        """Every rank's ``share`` results, put back in the order of the items they came from (on every rank)."""
        if self.world == 1:
            return list(mine)
        from accelerate.utils import gather_object

        parts = gather_object([list(mine)])
        out: list = [None] * sum(len(p) for p in parts)
        for r, part in enumerate(parts):
            out[r :: self.world] = part
        return out

    def map(self, fn: Callable[[list], list], items: Sequence) -> list:
        """``fn`` over this rank's share of ``items``, gathered back into ``items``' order on every rank."""
        mine = self.share(items)
        return self.gather(fn(mine) if mine else [])

    def part(self, path: Path) -> Path:
        """Where this rank appends rows meant for ``path``: ``path`` itself in a single process."""
        return path if self.world == 1 else path.with_name(f"{path.stem}.rank-{self.rank}{path.suffix}")


def current_ranks(device: str = "cpu") -> Ranks:
    """The launch this process belongs to: rank 0 of 1 unless ``WORLD_SIZE`` says several processes were started
    (then accelerate's state, gloo for a run on ``cpu``, NCCL on CUDA; an existing state, e.g. a run's Accelerator,
    is reused as it is)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Ranks()
    from accelerate import PartialState

    state = PartialState(cpu=str(device).split(":")[0] == "cpu")
    return Ranks(state.process_index, state.num_processes)


def _rows(path: Path) -> list[dict[str, Any]]:
    """JSON rows of ``path`` ([] if absent), skipping a torn last line (a killed writer)."""
    return read_jsonl(path, missing_ok=True)


def parts_of(path: Path) -> list[Path]:
    """The per-rank parts of ``path`` on disk (any number of ranks)."""
    return sorted(path.parent.glob(f"{path.stem}.rank-*{path.suffix}"))


def merge_parts(path: Path, order: Optional[Sequence[str]] = None) -> int:
    """Fold ``path``'s per-rank parts into it (rank 0 only; after a barrier) and delete them; returns rows added.

    Rows whose id ``path`` already holds are dropped (a merge interrupted before the parts were deleted); new rows
    follow ``order`` (ids), the rest keep their part order. The rewrite is atomic (temporary file, then rename)."""
    parts = parts_of(path)
    if not parts:
        return 0
    old = _rows(path)
    seen = {str(r["id"]) for r in old}
    new: dict[str, dict] = {}
    for part in parts:
        for row in _rows(part):
            if str(row["id"]) not in seen:
                new[str(row["id"])] = row
    rank = {rid: i for i, rid in enumerate(order or ())}
    added = sorted(new.values(), key=lambda r: rank.get(str(r["id"]), len(rank)))
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in [*old, *added]))
    for part in parts:
        part.unlink()
    return len(added)
