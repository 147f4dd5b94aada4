"""APTP pruning: gate layout, gating invariants, materialization, MACs, experts on disk, router and recipe."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from prunefit.config.schema import RouterSection
from prunefit.errors import ModelLoadError
from prunefit.evaluation.cost import count_macs
from prunefit.losses.aptp import contrastive_loss, importance_logits, resource_loss, sinkhorn
from prunefit.models.tiny import TinySDConfig, build_unet
from prunefit.pruning.expert import expert_info, load_expert, save_expert
from prunefit.pruning.gating import gated
from prunefit.pruning.macs import mac_model
from prunefit.pruning.materialize import materialize
from prunefit.pruning.router import Router, importance_order
from prunefit.pruning.spec import gate_spec

SD21_UNET = {
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "sample_size": 96, "layers_per_block": 2, "norm_num_groups": 32,
}
TINY = TinySDConfig(unet_channels=(16, 32, 32), attention_heads=2, norm_groups=4, cross_attention_dim=32)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    u = build_unet(TINY).eval().requires_grad_(False)
    with torch.no_grad():  # move off the zero-initialized conv_out so outputs carry signal
        for p in u.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return u


@pytest.fixture(scope="module")
def spec(unet):
    return gate_spec(unet, ffn_groups=8)


def _inputs(batch=2, text=7):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(batch, 4, 16, 16, generator=g), torch.tensor([10, 700][:batch]),
            torch.randn(batch, text, 32, generator=g))


def _random_arch(spec, seed, p_keep=0.6):
    g = torch.Generator().manual_seed(seed)
    arch = (torch.rand(spec.dim, generator=g) < p_keep).float()
    widths, depth = spec.split(arch.unsqueeze(0))
    for w in widths:
        w[0, 0] = 1.0
    return spec.join(widths, depth)[0]


def test_sd21_layout_matches_the_official_code():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        sd21 = UNet2DConditionModel.from_config(SD21_UNET)
    s = gate_spec(sd21)
    assert (len(s.width), s.width_dim, s.depth_dim, s.dim) == (70, 1606, 14, 1620)
    assert importance_order(s) == [13, 12, 0, 1, 11, 10, 2, 3, 9, 8, 4, 5, 7, 6]
    assert sum(g.size for g in s.width if g.module.startswith("down_blocks.0")) == 148


def test_all_ones_gates_are_bit_identical(unet, spec):
    x, t, c = _inputs()
    with torch.no_grad():
        ref = unet(x, t, c).sample
        with gated(unet, spec, spec.ones(2)):
            out = unet(x, t, c).sample
    assert torch.equal(ref, out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_gating_equals_materialized_model(unet, spec, seed):
    arch = _random_arch(spec, seed)
    x, t, c = _inputs()
    expert = copy.deepcopy(unet)
    materialize(expert, spec, arch)
    with torch.no_grad():
        with gated(unet, spec, arch):
            masked = unet(x, t, c).sample
        sliced = expert(x, t, c).sample
    assert (masked - sliced).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in expert.parameters()) < sum(p.numel() for p in unet.parameters())


def test_gates_hook_cfg_doubled_batches_and_are_removed(unet, spec):
    arch = _random_arch(spec, 5)
    x, t, c = _inputs()
    with torch.no_grad():
        with gated(unet, spec, arch.unsqueeze(0)):  # one architecture, batch 2 (as with CFG doubling)
            unet(x, t, c)
        after = unet(x, t, c).sample
        assert torch.equal(after, unet(x, t, c).sample)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in unet.modules())


def test_soft_gates_receive_gradients(unet, spec):
    arch = torch.full((1, spec.dim), 0.9, requires_grad=True)
    x, t, c = _inputs()
    with gated(unet, spec, arch):
        unet(x, t, c).sample.square().mean().backward()
    assert arch.grad is not None and arch.grad.abs().sum() > 0


def test_materialized_expert_runs_in_a_stock_pipeline(tiny):
    from prunefit.models.components import make_pipeline

    s = gate_spec(tiny.unet, ffn_groups=8)
    expert = copy.deepcopy(tiny.unet)
    materialize(expert, s, _random_arch(s, 7))
    pipe = make_pipeline(tiny.with_unet(expert))
    img = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    assert img.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("seed", [None, 0, 4])
def test_analytic_macs_match_flop_counter(unet, spec, seed):
    macs = mac_model(unet, spec, 16, 7)
    if seed is None:
        assert macs.total == pytest.approx(count_macs(unet, 16, 7), rel=0.01)
        return
    arch = _random_arch(spec, seed)
    expert = copy.deepcopy(unet)
    materialize(expert, spec, arch)
    assert float(macs.macs(arch.unsqueeze(0))) == pytest.approx(count_macs(expert, 16, 7), rel=0.01)


def test_cross_attention_macs_use_the_text_length(unet, spec):
    short, long = mac_model(unet, spec, 16, 7).total, mac_model(unet, spec, 16, 77).total
    assert long > short and count_macs(unet, 16, 77) == pytest.approx(long, rel=0.01)


def test_expert_round_trip_and_bad_inputs(unet, spec, tmp_path):
    arch = _random_arch(spec, 9)
    expert = copy.deepcopy(unet)
    kept = materialize(expert, spec, arch)
    info = expert_info(unet, spec, arch, "tiny-test", kept, 0.8, {"resolution": 32})
    path = save_expert(expert, info, tmp_path / "e")
    loaded, info2 = load_expert(path, unet.config)
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, c).sample, expert(x, t, c).sample)
    assert info2.kept == kept and json.loads((path / "expert.json").read_text())["mac_ratio"] == 0.8
    other = build_unet(TinySDConfig(unet_channels=(16, 32), attention_heads=2, norm_groups=4,
                                    cross_attention_dim=32))
    with pytest.raises(ModelLoadError, match="pruned from another base model"):
        load_expert(path, other.config)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "expert.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_expert(tmp_path / "c")
    (path / "unet.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_expert(path)
    with pytest.raises(ModelLoadError, match="not an expert folder"):
        load_expert(tmp_path)


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 4, generator=g)
    q = sinkhorn(scores, epsilon=0.5, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)  # each prompt's plan sums to 1
    assert torch.allclose(q.sum(0), torch.full((4,), 16.0), atol=1e-3)  # uniform expert loads
    loads = torch.bincount(sinkhorn(scores * 0.01, 0.05, 3).argmax(-1), minlength=4)
    assert loads.max() <= 2 * 64 / 4


def test_router_inference_is_batch_independent(spec):
    r = Router(spec, 24, RouterSection(), num_experts=3)
    with torch.no_grad():
        r.codebook.normal_(0, 3)
    z = torch.randn(10, 24, generator=torch.Generator().manual_seed(1))
    full = r.route(z)
    assert [r.route(z[i : i + 1]).item() for i in range(10)] == full.tolist()
    assert torch.equal(r.route(z.flip(0)).flip(0), full)
    codes = r.expert_codes()
    widths, _ = spec.split(codes)
    assert all((w.sum(-1) >= 1).all() for w in widths)  # every width group keeps at least one gate


def test_aptp_losses_by_hand():
    f = torch.sigmoid(importance_logits(torch.zeros(1, 4)))  # uniform p: nested keep-probabilities 1, .75, .5, .25
    assert torch.allclose(f, torch.tensor([[1.0, 0.75, 0.5, 0.25]]), atol=1e-5)
    assert resource_loss(torch.tensor([0.4, 0.6]), 0.5).item() == pytest.approx(0.0, abs=1e-7)
    assert resource_loss(torch.tensor([1.0]), 0.5).item() == pytest.approx(abs(torch.log(torch.tensor(2.0)).item()))
    assert resource_loss(torch.tensor([0.7]), 0.5, "mse").item() == pytest.approx(0.04)
    z = torch.eye(3)
    low = contrastive_loss(torch.eye(3) * 5, z).item()
    high = contrastive_loss(torch.ones(3, 3) + torch.eye(3) * 0.01, z).item()
    assert low < high


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_structured_baselines_reach_the_target(method, tmp_path):
    from prunefit.config.load import load_config
    from prunefit.config.schema import PruneConfig
    from prunefit.recipes import prune

    cfg = load_config(PruneConfig, [], [f"method={method}", "model=tiny", f"output_dir={tmp_path / method}",
                                        "target=0.7", "router.ffn_groups=8"])
    res = prune.main(cfg)
    assert len(res.experts) == 1 and res.mac_ratios[0] == pytest.approx(0.7, abs=0.03)
    unet, info = load_expert(res.experts[0])
    assert info.extra["method"] == method


@pytest.mark.slow
def test_aptp_recipe_on_tiny(tmp_path):
    from prunefit.config.load import load_config
    from prunefit.config.schema import PruneConfig
    from prunefit.errors import OutputError
    from prunefit.recipes import prune

    # 60 steps at a high LR and a low Gumbel temperature (training samples close to the noise-free codes the
    # experts are cut from): measured 0.777 / 0.837 / 0.829, mean 0.814. The logged training ratio is one noisy
    # batch of Gumbel samples and depends on the thread count (last row 0.801 at two threads, 0.857 at one), so
    # only the exported experts are held to the target.
    cfg = load_config(PruneConfig, [], ["model=tiny", f"output_dir={tmp_path / 'p'}", "steps=60", "batch_size=4",
                                        "lr=0.25", "router.temperature=0.1", "num_experts=3", "eval_prompts=0",
                                        "hypernet_pretrain_steps=10", "router.ffn_groups=8"])
    res = prune.main(cfg)
    assert len(res.experts) == 3 and max(res.mac_ratios) < 1.0  # every expert was pruned
    assert sum(res.mac_ratios) / 3 == pytest.approx(0.8, abs=0.05)
    rows = [json.loads(x) for x in (tmp_path / "p" / "log.jsonl").read_text().splitlines()]
    ratios = [r["router/mac_ratio"] for r in rows if "router/mac_ratio" in r]
    assert len(ratios) == 6 and all(0.5 < r <= 1.0 for r in ratios)  # one row per 10 steps
    assert (tmp_path / "p" / "router" / "router.safetensors").is_file()
    with pytest.raises(OutputError, match="already holds a finished prune run"):
        prune.main(cfg)


def test_calibrated_routing_is_balanced_and_batch_independent(spec):
    r = Router(spec, 24, RouterSection(), num_experts=4)
    with torch.no_grad():
        r.codebook.normal_(0, 3)
        r.predictor.depth.weight.mul_(5)
    z = torch.randn(400, 24, generator=torch.Generator().manual_seed(2))
    before = torch.bincount(r.route(z), minlength=4)
    loads = r.calibrate(z)
    assert loads.max() <= 2 * 400 / 4 and (loads > 0).all(), (before, loads)
    assert [r.route(z[i : i + 1]).item() for i in range(20)] == r.route(z[:20]).tolist()


def test_noise_free_codes_keep_what_training_kept_half_the_time(spec):
    from prunefit.losses.aptp import GUMBEL_MEDIAN, gumbel_noise

    r = Router(spec, 8, RouterSection(), num_experts=1)
    with torch.no_grad():
        r.codebook.uniform_(-4.5, -1.5)  # logits around the keep boundary (-3)
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([r.relax(r.codebook, g) for _ in range(400)])
    kept_often = ((samples >= 0.5).float().mean(0) >= 0.5)[0, : spec.width_dim]
    noise_free = (r.relax(r.codebook, noisy=False) >= 0.5)[0, : spec.width_dim]
    assert (kept_often == noise_free).float().mean() > 0.95
    assert abs(gumbel_noise((200000,), torch.Generator().manual_seed(1)).median().item() - GUMBEL_MEDIAN) < 0.02
