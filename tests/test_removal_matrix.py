"""Every registered removal method on tiny dense and pruned UNets, plus each method's math by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from prunefit.config.load import load_config
from prunefit.losses.guidance import negative_guidance_target
from prunefit.removal.registry import list_methods

# name -> (overrides, which parameters may change: substring that every changed UNet parameter name contains)
METHOD_CASES = {
    "esd": (["esd.iterations=2", "esd.ddim_steps=4", "esd.train_method=xattn"], "attn2"),
    "uce": ([], "attn2"),
    "concept_prune": (["concept_prune.steps=2", "concept_prune.things=[a red circle, a blue star]"], "ff.net.2"),
    "advunlearn": (["advunlearn.iterations=2", "advunlearn.ddim_steps=4", "advunlearn.attack_steps=1",
                    "advunlearn.train_method=xattn"], "attn2"),
}


def test_matrix_covers_every_registered_method():
    assert sorted(METHOD_CASES) == sorted(m.name for m in list_methods())


@pytest.fixture(scope="module")
def tiny_expert(tmp_path_factory):
    """A tiny expert with its last up-block transformer dropped (a layer list must be read from the model)."""
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import expert_info, save_expert
    from prunefit.pruning.materialize import materialize
    from prunefit.pruning.spec import gate_spec

    base = load_components("tiny").unet
    spec = gate_spec(base, 8)
    arch = torch.ones(spec.dim)
    arch[spec.width_dim + [d.name for d in spec.depth].index("up_blocks.1.attentions.2.depth")] = 0
    unet = copy.deepcopy(base)
    kept = materialize(unet, spec, arch)
    return save_expert(unet, expert_info(base, spec, arch, "tiny", kept, 0.9, {}), tmp_path_factory.mktemp("e") / "e")


def _state(path):
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert

    if (path / "expert.json").is_file():
        return load_expert(path)[0]
    return load_components(str(path)).unet


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "expert"])
def test_method_matrix(name, pruned, tiny_expert, tmp_path):
    from prunefit.models.components import load_components
    from prunefit.pruning.expert import load_expert
    from prunefit.recipes import erase
    from prunefit.removal.config import EraseConfig

    overrides, allowed = METHOD_CASES[name]
    student = [f"student={tiny_expert}"] if pruned else []
    cfg = load_config(EraseConfig, [], ["model=tiny", f"output_dir={tmp_path / 'out'}", f"removal.method={name}",
                                        "removal.concepts=[Claude Dots]", *student, *overrides])
    res = erase.main(cfg)
    before = load_expert(tiny_expert)[0] if pruned else load_components("tiny").unet
    after = _state(res.model_path)
    changed = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert changed, "the method changed nothing"
    assert all(allowed in k for k in changed), [k for k in changed if allowed not in k][:3]
    if "steps" in res.info:
        import json

        rows = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
        totals = [r[f"{name}/total"] for r in rows if f"{name}/total" in r]
        assert totals and all(torch.isfinite(torch.tensor(v)) for v in totals), f"no finite {name}/total logged"
    # save -> load -> identical outputs
    again = _state(res.model_path)
    g = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([300]), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(after(x, t, c).sample, again(x, t, c).sample)


def test_uce_closed_form_equals_least_squares():
    from prunefit.removal.uce.method import uce_closed_form

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    ce, v = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    cp = torch.randn(4, 5, generator=g, dtype=torch.float64)
    lam, es, ps = 0.5, 1.0, 0.3
    new = uce_closed_form(w, ce, v, cp, lam, es, ps)
    a = torch.cat([lam ** 0.5 * torch.eye(5, dtype=torch.float64), es ** 0.5 * ce, ps ** 0.5 * cp])
    b = torch.cat([lam ** 0.5 * w.T, es ** 0.5 * v, ps ** 0.5 * cp @ w.T])
    direct = torch.linalg.lstsq(a, b).solution.T
    assert torch.allclose(new, direct, atol=1e-10)


def test_uce_preserve_set_drops_other_spellings_of_erased_concepts():
    from prunefit.removal.uce.method import filter_preserve

    kept, dropped = filter_preserve(["Pablo Picasso", "claude monet", "Piet Grid", "picasso"], ["Picasso"])
    assert kept == ["claude monet", "Piet Grid"] and dropped == ["Pablo Picasso", "picasso"]


def test_concept_prune_skilled_mask_by_hand():
    from prunefit.removal.concept_prune.method import skilled_mask

    w = torch.tensor([[1.0, -2.0, 0.5, 0.1], [0.2, 0.2, 3.0, 1.0]])
    a_t = torch.tensor([1.0, 1.0, 1.0, 1.0])
    a_b = torch.tensor([2.0, 0.5, 0.1, 1.0])
    m = skilled_mask(w, a_t, a_b, 0.5)  # top-2 per row by |W| a_t that also beat |W| a_b
    assert m.tolist() == [[False, True, False, False], [False, False, True, False]]


def test_negative_guidance_target_by_hand():
    u, c = torch.tensor([1.0]), torch.tensor([3.0])
    assert negative_guidance_target(u, c, 1.0).item() == -1.0
    assert negative_guidance_target(u, c, 0.5).item() == 0.0


def test_unknown_method_and_missing_concepts():
    from prunefit.errors import ConfigError
    from prunefit.removal.config import EraseConfig
    from prunefit.removal.registry import get_method

    with pytest.raises(ConfigError, match=r"unknown removal method 'esdx'; available: \['advunlearn'"):
        get_method("esdx")
    with pytest.raises(ConfigError, match="no concepts to remove"):
        load_config(EraseConfig, [], ["removal.method=uce"]).method_config()
