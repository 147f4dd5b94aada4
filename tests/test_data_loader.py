"""Prefetched image batches (``data.num_workers``) are the serial batches bit for bit, for any request sequence
(resume jumps, held-out batches, a new batch size), count skipped images alike, stop their workers on close, and
leave archived experiment stages where they were."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prunefit.config.schema import DataConfig
from prunefit.data.datasets import ToyWorldData, image_caption_folder
from prunefit.data.loader import Prefetcher, prefetching
from prunefit.errors import ConfigError, DataError
from prunefit.objectives.inputs import InputBuilder

# (request, answered by the workers?): three misses a stride apart start the chain (a held-out batch between them
# does not count), a held-out batch leaves a running chain alone, a jump (resume) and a new n restart it.
REQUESTS = [((0, 4), False), ((4, 4), False), ((10**9, 4), False), ((8, 4), False), ((12, 4), True),
            ((10**9, 4), False), ((16, 4), True), ((20, 4), True), ((40, 4), False), ((44, 4), False),
            ((48, 4), False), ((52, 4), True), ((52, 3), False), ((55, 3), False), ((58, 3), False),
            ((61, 3), True), ((64, 3), True)]


def _folder(root: Path, n: int = 10) -> Path:
    """``n`` small PNGs of mixed sizes (centre crop matters) with captions, one of them unreadable."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"{i}.png"
        if i == 3:
            (root / name).write_bytes(b"not a png")
        else:
            h, w = (12, 20) if i % 2 else (24, 16)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
        rows.append(json.dumps({"file_name": name, "text": f"picture {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows))
    return root


def _check_against_serial(make_data) -> None:
    serial, data = make_data(), make_data()
    rng_before = torch.get_rng_state()
    with Prefetcher(data, num_workers=2) as pre:
        for (start, n), from_workers in REQUESTS:
            hits = pre.hits
            images, captions = pre.samples(start, n)
            want_images, want_captions = serial.samples(start, n)
            assert torch.equal(images, want_images) and captions == want_captions, (start, n)
            assert pre.hits == hits + from_workers, (start, n)
            assert data.skipped == serial.skipped
    assert torch.equal(torch.get_rng_state(), rng_before)  # the DataLoader's seeds come from its own generator


def test_toyworld_batches_from_workers_equal_the_serial_ones():
    _check_against_serial(lambda: ToyWorldData(seed=3, p_artist=0.7))


def test_folder_batches_from_workers_equal_the_serial_ones_and_count_skipped_images(tmp_path):
    folder = _folder(tmp_path)
    _check_against_serial(lambda: image_caption_folder(folder, resolution=8, seed=5))
    data = image_caption_folder(folder, resolution=8, seed=5)
    data.samples(0, 57)
    assert data.skipped > 0  # the unreadable row was met (and counted alike above)


def test_zero_workers_and_tensor_sources_keep_the_data_object():
    toy = ToyWorldData(seed=1)
    assert prefetching(toy, 0) is toy
    assert InputBuilder(components=None, data=toy, seed=0).data is toy  # default: load in the step
    assert InputBuilder(components=None, data=toy, seed=0, num_workers=0).data is toy
    assert InputBuilder(components=None, data=toy, seed=0, num_workers=2, cache=object()).data is toy
    other = object()  # not an image source (a latent cache, a test double): never wrapped
    assert prefetching(other, 2) is other
    pre = prefetching(toy, 2)
    assert isinstance(pre, Prefetcher) and prefetching(pre, 2) is pre  # a held-out copy shares the workers
    pre.close()


def test_workers_start_on_a_predictable_request_and_stop_on_close():
    pre = Prefetcher(ToyWorldData(seed=2), num_workers=2)
    pre.samples(0, 2)
    pre.samples(2, 2)
    assert pre.worker_pids == ()  # no stride confirmed yet: no processes
    pre.samples(4, 2)
    pids = pre.worker_pids
    assert len(pids) == 2
    pre.close()
    assert pre.worker_pids == ()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # exited and reaped
    images, _ = pre.samples(6, 2)  # still usable after close, loaded in the process
    assert torch.equal(images, ToyWorldData(seed=2).samples(6, 2)[0])


class _FailsFrom12(ToyWorldData):
    """Toy-world data whose samples from index 12 on cannot be read."""

    def samples(self, start, n):
        if start + n > 12:
            raise DataError(f"64 unreadable images in a row near sample {start}; check the data set")
        return super().samples(start, n)


def test_a_worker_error_is_raised_as_the_serial_path_raises_it():
    with Prefetcher(_FailsFrom12(seed=0), num_workers=1) as pre:
        for start in (0, 4, 8):
            pre.samples(start, 4)
        with pytest.raises(DataError, match=r"^64 unreadable images in a row near sample 12; check the data set$"):
            pre.samples(12, 4)


def test_input_builder_with_workers_gives_the_same_diffusion_batches(tiny):
    def batches(workers: int) -> list:
        builder = InputBuilder(components=tiny, data=ToyWorldData(seed=4), seed=0, num_workers=workers)
        out = [builder(start, 2) for start in (0, 2, 4, 6)]
        builder.close()
        return out

    for got, want in zip(batches(1), batches(0)):
        assert got.captions == want.captions
        for name in ("latents", "text", "noise", "timesteps"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_data_config_workers_settings():
    cfg = DataConfig()
    assert (cfg.num_workers, cfg.pin_memory) == (2, True)
    assert DataConfig(num_workers=0).num_workers == 0
    with pytest.raises(ConfigError, match=r"data.num_workers must be >= 0"):
        DataConfig(num_workers=-1)


def test_archived_stage_keys_do_not_move_with_the_new_data_settings():
    """An archived stage's spec hashes to its folder's suffix with the loader settings at any value (they never
    change a batch), and ``train.allow_tf32`` / ``cudnn_benchmark`` at their defaults; a non-default tf32 (which
    changes GPU numerics) gives a new stage."""
    from prunefit.experiments.common.stages import stage_key

    specs = sorted(Path("docs/results/pareto_cells").rglob("spec.json"))
    assert specs
    for path in specs[:5]:
        spec, want = json.loads(path.read_text()), path.parent.name.rsplit("-", 1)[1]
        assert stage_key(spec) == want
        sections = [spec["data"]] + ([spec["bilevel"]["data"]] if "data" in spec.get("bilevel", {}) else [])
        for workers, pin in ((2, True), (0, False), (8, True)):
            for section in sections:
                section.update(num_workers=workers, pin_memory=pin)
            assert stage_key(spec) == want
        trains = [spec["train"]] + ([spec["bilevel"]["train"]] if "train" in spec.get("bilevel", {}) else [])
        for section in trains:
            section.update(allow_tf32=True, cudnn_benchmark=True)
        assert stage_key(spec) == want
        trains[0]["allow_tf32"] = False
        assert stage_key(spec) != want
