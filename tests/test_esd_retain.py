"""ESD's optional retain term: off by default (ESD's loss exactly), AdvUnlearn's term when on, validated when the
phase is built (a model's defaults may supply the prompts), and invisible to archived experiment stages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from prunefit.errors import ConfigError
from prunefit.removal.context import RemovalContext
from prunefit.removal.esd.method import ESDConfig, ESDObjective, build_phase

RETAIN = ["a red circle on a black background", "a blue square on a white background"]


def _loss(unet, frozen, tiny, **kw):
    cfg = ESDConfig(concepts=["skull"], ddim_steps=4, **kw)
    torch.manual_seed(0)
    return ESDObjective(RemovalContext(unet, frozen, tiny), unet, cfg)(0, 2)


def test_retain_weight_zero_is_esd_and_the_term_is_the_frozen_models_prediction(tiny):
    edited = copy.deepcopy(tiny.unet)
    with torch.no_grad():
        for p in edited.parameters():
            p.add_(0.01 * torch.randn_like(p))
    plain = _loss(edited, tiny.unet, tiny)
    off = _loss(edited, tiny.unet, tiny, retain_prompts=RETAIN, retain_weight=0.0)
    on = _loss(edited, tiny.unet, tiny, retain_prompts=RETAIN, retain_weight=2.0)
    assert set(plain.parts) == {"esd"} and torch.equal(off.total, plain.total)  # ESD as published
    assert torch.equal(on.parts["esd"], plain.total)  # the same x_t and target: the ESD part is unchanged
    assert float(on.parts["retain"]) > 0  # the perturbed copy predicts differently from the frozen model
    assert torch.allclose(on.total, plain.total + 2.0 * on.parts["retain"])
    same = _loss(tiny.unet, tiny.unet, tiny, retain_prompts=RETAIN, retain_weight=2.0)
    assert float(same.parts["retain"]) == 0.0  # an unedited model retains perfectly


def test_retain_at_the_retain_prompts_own_rollout(tiny):
    """retain_xt=own: the ESD part is unchanged, the retain term is taken at a different x_t (the retain prompt's
    own rollout, its own RNG stream), and an unedited model still retains perfectly."""
    edited = copy.deepcopy(tiny.unet)
    with torch.no_grad():
        for p in edited.parameters():
            p.add_(0.01 * torch.randn_like(p))
    kw = {"retain_prompts": RETAIN, "retain_weight": 2.0}
    concept = _loss(edited, tiny.unet, tiny, **kw)
    own = _loss(edited, tiny.unet, tiny, retain_xt="own", **kw)
    assert torch.equal(own.parts["esd"], concept.parts["esd"])
    assert float(own.parts["retain"]) > 0 and not torch.equal(own.parts["retain"], concept.parts["retain"])
    assert float(_loss(tiny.unet, tiny.unet, tiny, retain_xt="own", **kw).parts["retain"]) == 0.0
    with pytest.raises(ConfigError, match="retain_xt must be concept or own"):
        ESDConfig(retain_xt="images")


def test_retain_weight_without_prompts_is_refused_when_the_phase_is_built(tiny):
    cfg = ESDConfig(concepts=["skull"], retain_weight=1.0)  # parsing alone accepts it: defaults may add prompts
    with pytest.raises(ConfigError, match=r"esd.retain_weight > 0 needs esd.retain_prompts"):
        build_phase(RemovalContext(tiny.unet, tiny.unet, tiny), cfg)
    with pytest.raises(ConfigError, match=r"retain_weight must be >= 0"):
        ESDConfig(retain_weight=-1.0)


def test_erase_refuses_a_retain_weight_without_prompts_before_making_the_output(tmp_path, capsys):
    from prunefit.cli import main

    out = tmp_path / "e"
    assert main(["erase", "model=tiny", "removal.method=esd", "removal.concepts=[x]", "esd.retain_weight=1",
                 f"output_dir={out}"]) == 2
    assert "needs esd.retain_prompts" in capsys.readouterr().err and not out.exists()


def test_archived_stage_keys_do_not_move_with_the_new_esd_settings():
    """An archived Pareto stage's spec hashes to its folder's suffix, with or without ESD's retain settings at
    their neutral values (which today's code writes); a non-neutral value gives a new stage."""
    from prunefit.experiments.common.stages import stage_key

    specs = sorted(Path("docs/results/pareto_cells").rglob("spec.json"))
    bilevel = [s for s in specs if "bilevel" in json.loads(s.read_text())]
    assert bilevel
    for path in bilevel[:5]:
        spec, want = json.loads(path.read_text()), path.parent.name.rsplit("-", 1)[1]
        assert stage_key(spec) == want
        spec["bilevel"]["esd"].update(retain_weight=0.0, retain_prompts=[], retain_xt="concept")
        assert stage_key(spec) == want
        spec["bilevel"]["esd"]["retain_weight"] = 1.0
        assert stage_key(spec) != want
