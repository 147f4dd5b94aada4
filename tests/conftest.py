"""Shared fixtures: offline environment, tiny SD components built from config (nothing downloads)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# `make test` runs two xdist workers on CI's two cores: one torch thread each (two threads each would oversubscribe
# the cores, which ran a toy UNet 15x slower here); a plain `pytest` run keeps up to two threads.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    """Tiny random SD components (epsilon prediction)."""
    from prunefit.models.components import load_components

    return load_components("tiny")


@pytest.fixture(scope="session")
def tiny_v():
    """Tiny random SD components with v-prediction."""
    from prunefit.models.components import load_components

    return load_components("tiny-v")
