"""``data.source=hf`` (a Hugging Face ``datasets`` table) gives the same batches as the folder source on the same files,
picks one of a row's captions by sample index, and works through the prefetcher; the sharded latent cache gives the
single-file cache's samples across shard boundaries while opening only the shards a batch needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_loader import _folder as caption_folder

from prunefit.config.schema import DataConfig
from prunefit.data.datasets import HFRows, build_data
from prunefit.data.loader import Prefetcher
from prunefit.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """``load_dataset`` writes its arrow cache under the test's folder, not the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _folder(root: Path, n: int = 6) -> Path:
    """``n`` small PNGs of mixed sizes with captions, one unreadable (the data-loader tests' folder)."""
    root.mkdir()
    return caption_folder(root, n)


def test_hf_imagefolder_batches_equal_the_folder_source_bit_for_bit(tmp_path):
    folder = _folder(tmp_path / "imgs")
    plain = build_data(DataConfig(source="folder", path=str(folder)), resolution=8, seed=5)
    hf = build_data(DataConfig(source="hf", path=str(folder)), resolution=8, seed=5)
    assert isinstance(hf, HFRows) and len(hf.rows) == 6
    for start, n in ((0, 4), (4, 5), (13, 6)):  # crosses epochs (new permutations) and meets the unreadable image
        a, b = plain.samples(start, n), hf.samples(start, n)
        assert torch.equal(a[0], b[0]) and a[1] == b[1]
        assert hf.captions(start, n) == plain.captions(start, n)
    assert hf.skipped == plain.skipped > 0
    with Prefetcher(build_data(DataConfig(source="hf", path=str(folder)), 8, 5), num_workers=1) as pre:
        for start in (0, 3, 6, 9, 12):  # the chain starts at the third request; later ones come from the worker
            images, caps = pre.samples(start, 3)
            want = hf.samples(start, 3)
            assert torch.equal(images, want[0]) and caps == want[1]
        assert pre.hits >= 1


def test_hf_saved_dataset_with_a_caption_list_picks_a_caption_by_sample_index(tmp_path):
    imgs = [Image.fromarray(np.full((10, 14, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    caps = [[f"row {i} caption {k}" for k in range(i + 1)] for i in range(3)]  # 1, 2 and 3 captions
    datasets.Dataset.from_dict({"picture": imgs, "captions": caps}).cast_column(
        "picture", datasets.Image()).save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source="hf", path=str(tmp_path / "saved"), image_column="picture", caption_column="captions")
    data = build_data(cfg, resolution=4, seed=1)
    images, got = data.samples(0, 9)
    for i, (x, cap) in enumerate(zip(images, got)):
        row = data._index(i)
        assert cap == caps[row][(i // 3) % len(caps[row])]  # epoch e (3 rows an epoch) shows caption e % k
        assert torch.allclose(x, torch.full_like(x, 40 * row / 127.5 - 1.0))  # a flat image stays flat
    assert data.captions(0, 9) == got and build_data(cfg, 4, 1).samples(0, 9)[1] == got
    assert len({c for c in got if c.startswith("row 2")}) == 3  # the row with 3 captions showed each of them
    with pytest.raises(DataError, match=r"no column 'text'.*data.caption_column"):
        build_data(DataConfig(source="hf", path=str(tmp_path / "saved"), image_column="picture"), 4)


def test_hf_source_errors_are_one_line():
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):  # conftest sets it: a hub id cannot be fetched
        build_data(DataConfig(source="hf", path="someone/some-dataset"), 8)
    with pytest.raises(ConfigError, match="data.source=hf needs data.path"):
        DataConfig(source="hf")
    assert (DataConfig().split, DataConfig().image_column, DataConfig().caption_column) == ("train", "image", "text")


def test_new_data_settings_at_their_defaults_keep_archived_stage_keys():
    from prunefit.experiments.common.stages import stage_key

    spec = json.loads(next(iter(sorted(Path("docs/results/pareto_cells").rglob("spec.json")))).read_text())
    want = stage_key(spec)
    spec["data"].update(split="train", image_column="image", caption_column="text")
    assert stage_key(spec) == want
    spec["data"]["caption_column"] = "captions"
    assert stage_key(spec) != want


def test_sharded_cache_equals_the_single_file_cache_and_opens_only_needed_shards(tiny, tmp_path, monkeypatch):
    from prunefit.data import cache as cache_mod
    from prunefit.data.datasets import ToyWorldData

    data = ToyWorldData(seed=3)
    cache_mod.build_cache(tiny, data, 10, tmp_path / "one", batch_size=3, meta={"model": "tiny"})
    cache_mod.build_cache(tiny, data, 10, tmp_path / "sharded", batch_size=3, meta={"model": "tiny"}, shard_size=4)
    assert sorted(p.name for p in (tmp_path / "sharded").glob("shard-*")) == [
        "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]  # 4 + 4 + 2 samples
    assert not (tmp_path / "sharded" / "cache.safetensors").exists()
    one = cache_mod.load_cache(tmp_path / "one", "tiny")
    opened = []
    real = cache_mod.safe_open
    monkeypatch.setattr(cache_mod, "safe_open", lambda path, **kw: opened.append(Path(path).name) or real(path, **kw))
    lazy = cache_mod.load_cache(tmp_path / "sharded", "tiny")
    assert isinstance(lazy, cache_mod.ShardedLatentCache) and len(lazy) == len(one) == 10 and opened == []
    for start, n, shards in ((5, 2, ["shard-00001.safetensors"]), (2, 4, ["shard-00000.safetensors"]),
                             (7, 6, ["shard-00002.safetensors"])):  # within one, across one boundary, cycling past N
        got, want = lazy.samples(start, n), one.samples(start, n)
        assert all(torch.equal(a, b) for a, b in zip(got[:3], want[:3])) and got[3] == want[3], (start, n)
        assert opened[-len(shards):] == shards  # newly opened: only the shards this batch needs
    assert opened == ["shard-00001.safetensors", "shard-00000.safetensors", "shard-00002.safetensors"]
    assert lazy.meta["model"] == "tiny"
    pickled = __import__("pickle").loads(__import__("pickle").dumps(lazy))  # a DataLoader worker's copy
    assert torch.equal(pickled.samples(3, 3)[0], one.samples(3, 3)[0])
