"""``<prune output>@mac=R`` names the expert whose MAC ratio is nearest R: configs say which expert they mean."""

from __future__ import annotations

import copy

import pytest
import torch

from prunefit.errors import ConfigError
from prunefit.pruning.resolve import check_inputs, expert_by_mac, resolve_model


@pytest.fixture(scope="module")
def prune_dir(tmp_path_factory):
    """A prune output of tiny with three experts at MAC ratios 0.62, 0.81, 0.95 (their numbers unordered)."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import expert_info, save_expert
    from prunefit.pruning.materialize import materialize
    from prunefit.pruning.spec import gate_spec

    root = tmp_path_factory.mktemp("macs") / "prune"
    base = load_components("tiny").unet
    spec = gate_spec(base, 8)
    arch = torch.ones(spec.dim)
    unet = copy.deepcopy(base)
    kept = materialize(unet, spec, arch)
    for k, ratio in enumerate((0.95, 0.62, 0.81)):
        save_expert(unet, expert_info(base, spec, arch, "tiny", kept, ratio, {}, expert_id=k),
                    root / "experts" / f"expert-{k}")
    return root


def test_the_nearest_expert_within_the_tolerance(prune_dir):
    assert expert_by_mac(f"{prune_dir}@mac=0.8") == str(prune_dir / "experts" / "expert-2")
    assert expert_by_mac(f"{prune_dir}@mac=.6") == str(prune_dir / "experts" / "expert-1")
    assert expert_by_mac("runs/x/expert") == "runs/x/expert"  # any other spec is unchanged
    check_inputs(student=f"{prune_dir}@mac=0.8")
    ref = resolve_model(f"{prune_dir}@mac=0.95")
    assert ref.kind == "expert" and ref.expert == str(prune_dir / "experts" / "expert-0")


def test_no_expert_near_the_ratio_is_one_line(prune_dir, tmp_path):
    from prunefit.errors import ModelLoadError

    with pytest.raises(ConfigError, match=r"no expert within 0.05 of MAC ratio 0.7 \(expert-0 0.950, expert-1 0.620"):
        expert_by_mac(f"{prune_dir}@mac=0.7")
    with pytest.raises(ModelLoadError, match="has no experts/expert-"):
        expert_by_mac(f"{tmp_path}@mac=0.8")
