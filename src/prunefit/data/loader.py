"""Load image batches ahead of the training step in ``DataLoader`` workers, bit-identical to the serial path.

The training loop reads samples ``start .. start + n - 1`` with starts a fixed stride apart (world x
micro-batch), so after requests ``(s, n)``, ``(s + d, n)`` and ``(s + 2d, n)`` the next ones are predictable:
``Prefetcher`` asks its workers for ``(s + 3d, n), (s + 4d, n), ...`` in order. A request that is the next
prefetched batch is answered from the workers; any other (the first ones, a resume, a held-out batch, a
different n) is loaded directly in the process, exactly as without workers, and three such misses a stride
apart (other misses may come between) restart the chain there. Each sample stays a pure function of (seed,
index): workers call the same ``samples`` on a copy of the data object, and unreadable images they skip are
counted in the data object when their batch is used.
The DataLoader draws its worker seeds from its own generator, so the process's global torch RNG is untouched.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from prunefit.data.datasets import CaptionRows, ToyWorldData

PREFETCHABLE = (ToyWorldData, CaptionRows)
"""Sources worth workers: they decode / render images. A latent cache already holds tensors."""


@dataclass
class LoadedBatch:
    """One ``samples(start, n)`` result made in a worker, with the unreadable images it skipped."""

    start: int
    n: int
    images: Optional[torch.Tensor]
    captions: list[str]
    skipped: int = 0
    failed: bool = False
    """The worker raised: the batch is loaded again in the process, which raises the same error there."""

    def pin_memory(self) -> "LoadedBatch":
        """This batch with its images in page-locked memory (the DataLoader's pin thread calls it)."""
        return self if self.images is None else replace(self, images=self.images.pin_memory())


class _Batches(Dataset):
    """Batch ``(start, n)`` of a data source, as a ``LoadedBatch``; runs in the workers."""

    def __init__(self, data) -> None:
        self.data = data

    def __getitem__(self, key: tuple[int, int]) -> LoadedBatch:
        start, n = key
        before = self.data.skipped
        try:
            images, captions = self.data.samples(start, n)
        except Exception:  # raised again, with its own message, by the direct load in the process
            return LoadedBatch(start, n, None, [], failed=True)
        return LoadedBatch(start, n, images, list(captions), self.data.skipped - before)


class _Chain(Sampler):
    """The requests ``(first + k * stride, n)``, k = 0, 1, ...: endless, restarted by the prefetcher."""

    def __init__(self) -> None:
        self.first, self.n, self.stride = 0, 1, 1

    def __iter__(self):
        k = self.first
        while True:
            yield (k, self.n)
            k += self.stride


def _unchanged(batch: LoadedBatch) -> LoadedBatch:
    """The collate function: a worker's batch is already whole."""
    return batch


def _shut_down(state: dict) -> None:
    """Stop the workers of ``state['iterator']`` (if started) and wait for them to exit."""
    it = state.pop("iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()


class Prefetcher:
    """``data`` (``samples``, ``captions``, ``skipped``) with batches loaded ahead in ``num_workers`` processes.

    Workers start at the first predictable request and stop at ``close()`` (or when the prefetcher is
    garbage-collected, or at exit). Use as a context manager where the caller owns the run."""

    def __init__(self, data, num_workers: int, pin_memory: bool = True, depth: int = 2) -> None:
        if num_workers < 1 or depth < 1:
            raise ValueError(f"Prefetcher needs num_workers >= 1 and depth >= 1, got {num_workers} and {depth}; "
                             "use the data object itself for loading in the step")
        self.data, self.num_workers, self.depth = data, num_workers, depth
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._chain = _Chain()
        self._state: dict = {}  # the DataLoader iterator, shared with the finalizer (which must not hold self)
        self._finalizer = weakref.finalize(self, _shut_down, self._state)
        _LIVE.add(self)
        self._loader: Optional[DataLoader] = None
        self._next: Optional[tuple[int, int]] = None
        """The request the workers' next batch answers (None: no chain running)."""
        self._missed: deque[tuple[int, int]] = deque(maxlen=4)
        """The latest requests the workers did not answer (three of them a stride apart start a chain)."""
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------------------------------- data API
    @property
    def skipped(self) -> int:
        """Unreadable images the data object has skipped so far."""
        return self.data.skipped

    def captions(self, start: int, n: int) -> list[str]:
        """The captions of samples [start, start + n), from the data object (no images loaded)."""
        return self.data.captions(start, n)

    def samples(self, start: int, n: int) -> tuple[torch.Tensor, list[str]]:
        """``data.samples(start, n)``: the workers' next batch when it is that one, else loaded here."""
        request = (start, n)
        got = self._take() if request == self._next else None
        if got is not None:
            self.hits += 1
            self.data.skipped += got.skipped
            out = (got.images, got.captions)
        else:
            self.misses += 1
            stride = self._stride(start, n)
            if stride:
                self._restart(start + stride, n, stride)
            self._missed.append(request)
            out = self.data.samples(start, n)
        return out

    def _stride(self, start: int, n: int) -> int:
        """d > 0 when earlier misses include (start - d, n) and (start - 2d, n), else 0 (a held-out batch or a
        lone jump in between does not count as a stride)."""
        earlier = [s for s, m in self._missed if m == n]
        for prev in reversed(earlier):
            d = start - prev
            if d > 0 and prev - d in earlier:
                return d
        return 0

    # ------------------------------------------------------------------------------------------- workers
    def _restart(self, first: int, n: int, stride: int) -> None:
        """Point the workers at ``(first + k * stride, n)``; batches still in flight are dropped."""
        self._chain.first, self._chain.n, self._chain.stride = first, n, stride
        if self._loader is None:
            self._loader = DataLoader(_Batches(self.data), batch_size=None, sampler=self._chain,
                                      num_workers=self.num_workers, pin_memory=self.pin_memory,
                                      persistent_workers=True, prefetch_factor=self.depth, collate_fn=_unchanged,
                                      generator=torch.Generator().manual_seed(0))  # not the global torch RNG
        self._state["iterator"] = iter(self._loader)  # persistent workers: a restart reuses the processes
        self._next = (first, n)

    def _take(self) -> Optional[LoadedBatch]:
        """The workers' next batch if it is the one expected and loaded without error; the chain moves on."""
        got: LoadedBatch = next(self._state["iterator"])
        want = self._next
        self._next = (want[0] + self._chain.stride, want[1])
        if (got.start, got.n) != want:  # cannot happen while the sampler is ours; never answer with it
            self._next = None
            return None
        return None if got.failed else got

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the running workers (empty before the first chain and after ``close``)."""
        it = self._state.get("iterator")
        return tuple(w.pid for w in getattr(it, "_workers", ()) if w.is_alive())

    def close(self) -> None:
        """Stop the worker processes; later requests load in the process until a chain restarts them."""
        _shut_down(self._state)
        self._loader, self._next = None, None
        self._missed.clear()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_LIVE: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()
"""Every prefetcher of this process, for ``close_all``."""


def close_all() -> None:
    """Stop the workers of every prefetcher in this process (the runtime calls it when a run ends)."""
    for prefetcher in list(_LIVE):
        prefetcher.close()


def prefetching(data, num_workers: int, pin_memory: bool = True):
    """``data`` behind a ``Prefetcher`` when it decodes or renders images and ``num_workers`` > 0, else ``data``."""
    if num_workers > 0 and isinstance(data, PREFETCHABLE) and not isinstance(data, Prefetcher):
        return Prefetcher(data, num_workers, pin_memory)
    return data

