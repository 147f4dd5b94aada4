"""Device correctness without a GPU: the core of each piece runs with model and data tensors on the ``meta`` device.

An op that mixes a CPU tensor with a meta tensor raises "Tensor on device cpu is not on the expected device meta!",
as it would with CUDA; ``strict_device.StrictDevice`` adds CUDA's generator check (a draw whose generator sits on
another device type than its output raises) and placeholders for value reads on meta (``.item()``, ``float()``,
``.tolist()``, ``.cpu()``, ``bincount``), so code that logs or moves results to the host still runs to its end.
Each test asserts that its results stay on meta, and that every random draw used a generator of its own device type.

What meta cannot show, and how it is covered instead: values (meta computes none), so numbers are pinned by the
pieces' own tests on CPU (test_pruning, test_removal_matrix, test_shared_math, test_reference_pins); tensors that
only ever live on the host (token ids, labels, seeds) by ``test_device_static``'s allow-list; ASR is plain Python
over detector flags (no tensors); ConceptPrune's sampler is diffusers' pipeline, run here on meta as a whole.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from strict_device import StrictDevice

from prunefit.models.tiny import TinySDConfig, tiny_components

META = torch.device(os.environ.get("PRUNEFIT_TEST_DEVICE", "meta"))
"""meta here; ``PRUNEFIT_TEST_DEVICE=cuda`` runs the same tests on a GPU (scripts/gpu_check.sh does)."""


def _on_meta(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == META.type for t in tensors)


@pytest.fixture(scope="module")
def world():
    """Tiny SD components with every weight on meta, their gate spec and (CPU-counted) MAC model."""
    from prunefit.pruning.macs import mac_model
    from prunefit.pruning.spec import gate_spec

    comps = tiny_components(TinySDConfig())
    spec = gate_spec(comps.unet, ffn_groups=4)
    macs = mac_model(comps.unet, spec, comps.native_resolution // comps.vae_scale_factor, 7)
    for m in (comps.unet, comps.vae, comps.text_encoder):
        m.to(META).requires_grad_(False)
    return comps, spec, macs


@pytest.fixture
def removal_ctx(world):
    from prunefit.removal.context import RemovalContext

    comps, _, _ = world
    unet = copy.deepcopy(comps.unet)
    return RemovalContext(unet=unet, frozen=copy.deepcopy(comps.unet), components=comps.with_unet(unet), seed=0,
                          device=META)


def _router(world, embed_dim=8, k=3):
    from prunefit.config.schema import RouterSection
    from prunefit.pruning.router import Router

    _, spec, _ = world
    torch.manual_seed(0)
    return Router(spec, embed_dim, RouterSection(), num_experts=k).to(META)


# ---------------------------------------------------------------- APTP router and calibration

def test_router_step_draws_noise_on_the_generators_device(world):
    router = _router(world)
    z = torch.randn(4, 8, device=META)
    with StrictDevice(META) as mode:
        s, zq, idx = router.route_train(z, torch.Generator().manual_seed(0))
        soft = router.relax(router.predictor(z), torch.Generator().manual_seed(1))
    assert _on_meta(s, zq, idx, soft)
    assert mode.draws and all(g == "cpu" for _, g, _ in mode.draws)  # a CPU seed, the same noise on any device


def test_gumbel_noise_is_the_generators_draw_moved_to_the_data():
    from prunefit.losses.aptp import gumbel_noise

    a = gumbel_noise((3, 5), torch.Generator().manual_seed(7), device="cpu")
    u = torch.rand((3, 5), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, -torch.log(-torch.log(u + 1e-20) + 1e-20))
    with StrictDevice(META):
        b = gumbel_noise((3, 5), torch.Generator().manual_seed(7), device=META)
    assert b.device.type == META.type and b.shape == (3, 5)


def test_calibration_potentials_on_the_scores_device(world):
    from prunefit.losses.aptp import sinkhorn, sinkhorn_log_potentials

    router = _router(world)
    with StrictDevice(META):
        log_v = sinkhorn_log_potentials(torch.randn(6, 3, device=META))
        plan = sinkhorn(torch.randn(6, 3, device=META))
        router.calibrate(torch.randn(6, 8, device=META))
        routed = router.route(torch.randn(2, 8, device=META))
        codes = router.expert_codes()
    assert _on_meta(log_v, plan, router.route_log_v, routed, codes)


def test_gating_moves_host_gates_to_each_activation(world):
    from prunefit.pruning.gating import gated

    comps, spec, _ = world
    lat = comps.native_resolution // comps.vae_scale_factor
    x, text = torch.randn(2, 4, lat, lat, device=META), torch.randn(2, 7, 32, device=META)
    arch = torch.ones(2, spec.dim)  # a code read from expert.json / spec.ones: on the host
    with StrictDevice(META), gated(comps.unet, spec, arch):
        out = comps.unet(x, torch.tensor([3, 500], device=META), text).sample
    assert _on_meta(out)


def test_router_objective_on_meta(world):
    from prunefit.config.schema import PruneConfig
    from prunefit.pruning.objective import RouterObjective

    comps, spec, macs = world
    res = comps.native_resolution

    class Data:
        def samples(self, start, n):
            return torch.zeros(n, 3, res, res), [f"caption {start + i}" for i in range(n)]

    cfg = PruneConfig(num_experts=3, hypernet_pretrain_steps=1)
    obj = RouterObjective(cfg, comps, spec, macs, _router(world), lambda caps: torch.randn(len(caps), 8), Data())
    with StrictDevice(META) as mode:
        out = obj(0, 2, step=5)
    assert _on_meta(out.total, *out.parts.values())
    assert all(g == t for _, g, t in mode.draws)


# ---------------------------------------------------------------- edit methods

def test_uce_closed_form_and_apply_on_meta(removal_ctx):
    from prunefit.removal.uce.method import UCEConfig, apply, uce_closed_form

    w = torch.randn(6, 4, device=META)
    new = uce_closed_form(w, torch.randn(2, 4, device=META), torch.randn(2, 6, device=META),
                          torch.randn(3, 4, device=META), 0.5, 1.0, 0.1)
    assert _on_meta(new) and new.shape == w.shape
    with StrictDevice(META):
        apply(removal_ctx, UCEConfig(concepts=["a red circle"], guides=["a circle"]))
    assert _on_meta(*removal_ctx.unet.parameters())


def test_concept_prune_on_meta(removal_ctx, monkeypatch):
    """The whole edit, the stock sampler included, except diffusers' scheduler step: it indexes its table with the
    timestep tensor (a value read CUDA makes and meta cannot), so here it is a shape-keeping stand-in."""
    from prunefit.models import schedulers
    from prunefit.removal.concept_prune.method import ConceptPruneConfig, apply, union_over_steps

    make = schedulers.make_scheduler

    def on_meta(*args, **kwargs):
        sched = make(*args, **kwargs)
        sched.step = lambda out, t, x, *a, **k: (x + 0 * out,)
        return sched

    monkeypatch.setattr(schedulers, "make_scheduler", on_meta)

    w = torch.randn(5, 20, device=META)
    acts = [torch.rand(20, device=META) for _ in range(2)]
    assert _on_meta(union_over_steps(w, acts, acts[::-1], 0.1, 2))
    cfg = ConceptPruneConfig(concepts=["sketch"], things=["a red circle"], steps=2, union_steps=1)
    with StrictDevice(META) as mode:
        res = apply(removal_ctx, cfg)
    assert _on_meta(*removal_ctx.unet.parameters())
    assert res.info["layers"] and all(g == t for _, g, t in mode.draws)


# ---------------------------------------------------------------- train methods and objectives

def test_esd_objective_on_meta(removal_ctx):
    from prunefit.removal.esd.method import ESDConfig, ESDObjective

    cfg = ESDConfig(concepts=["a red circle"], ddim_steps=3, retain_prompts=["a blue square"], retain_weight=1.0)
    with StrictDevice(META) as mode:
        out = ESDObjective(removal_ctx, removal_ctx.unet, cfg)(0, 2)
    assert _on_meta(out.total, *out.parts.values())
    assert all(g == t for _, g, t in mode.draws)


def test_advunlearn_objective_on_meta(removal_ctx):
    from prunefit.removal.advunlearn.method import AdvUnlearnConfig, AdvUnlearnObjective

    for p in removal_ctx.unet.parameters():
        p.requires_grad_(True)
    cfg = AdvUnlearnConfig(concepts=["a red circle"], ddim_steps=3, attack_steps=1, attack_warmup=1,
                           retain_prompts=["a blue square"])
    obj = AdvUnlearnObjective(removal_ctx, removal_ctx.unet, cfg)
    with StrictDevice(META) as mode:
        outs = [obj(0, 1), obj(1, 1)]  # the first call before the attack's warm-up ends, the second attacked
    for out in outs:  # every logged part too: they are reduced across processes
        assert _on_meta(out.total, *out.parts.values())
    assert all(g == t for _, g, t in mode.draws)


def test_bilevel_penalized_objective_parts_on_meta():
    from prunefit.objectives.base import LossOutput
    from prunefit.removal.bilevel.objective import PenalizedObjective

    model = torch.nn.Linear(3, 2, device=META)
    f = lambda s, n: LossOutput(model.weight.pow(2).sum(), {})  # noqa: E731
    obj = PenalizedObjective(f, f, model, list(model.parameters()), lam=0.5, f_every=2, upper_batch=1)
    out = obj(0, 1, step=1)  # (step + 1) % f_every == 0: the upper term runs
    assert "upper_weight" in out.parts and _on_meta(out.total, *out.parts.values())


def test_denoising_and_distillation_loss_on_meta(world):
    from prunefit.objectives.denoising import DenoisingObjective
    from prunefit.objectives.inputs import DiffusionBatch

    comps, _, _ = world
    n, lat = 2, comps.native_resolution // comps.vae_scale_factor
    batch = DiffusionBatch(torch.randn(n, 4, lat, lat, device=META), torch.randn(n, 77, 32, device=META),
                           torch.randn(n, 4, lat, lat, device=META), torch.tensor([3, 500], device=META), ["a", "b"])
    for prediction in ("epsilon", "v_prediction"):
        obj = DenoisingObjective(student=comps.unet, teacher=comps.unet, inputs=None, prediction_type=prediction,
                                 alphas_cumprod=comps.scheduler.alphas_cumprod)  # the scheduler's: on the CPU
        with StrictDevice(META):
            out = obj.loss(batch)
        assert _on_meta(out.total, *out.parts.values()) and set(out.parts) == {"ddpm", "output_kd", "feature_kd"}


def test_posterior_draws_on_the_data_device():
    from prunefit.objectives.noise import posterior_draws

    mean = torch.zeros(2, 4, 3, 3, device=META)
    with StrictDevice(META):
        latents, noise, t = posterior_draws(mean, mean, [torch.Generator().manual_seed(i) for i in range(2)],
                                            0.18, 1000)
    assert _on_meta(latents, noise, t)


# ---------------------------------------------------------------- attacks

def test_soft_prompt_attack_step_on_meta(world):
    from prunefit.attacks.base import attack_generator
    from prunefit.attacks.soft_prompt import init_prefix, nearest_tokens, pgd_step
    from prunefit.attacks.unlearndiff.attack import denoising_losses

    comps, _, _ = world
    lat = comps.native_resolution // comps.vae_scale_factor
    latents = torch.randn(2, 4, lat, lat, device=META)
    with StrictDevice(META) as mode:
        prefix = torch.stack([init_prefix(comps, 2, None, attack_generator(0, p, "init")) for p in "ab"])
        prefix.requires_grad_(True)
        gens = [attack_generator(0, p, "noise") for p in "ab"]
        loss = denoising_losses(comps, ["a red circle", "a blue square"], prefix, latents, gens, 2)
        (grad,) = torch.autograd.grad(loss.sum(), prefix)
        new = pgd_step(prefix, grad, 0.1, origin=prefix.detach(), eps=0.5)
        tokens = nearest_tokens(comps, new[0])
    assert _on_meta(prefix, loss, grad, new) and len(tokens) == 2
    assert mode.draws and all(g == t for _, g, t in mode.draws)


# ---------------------------------------------------------------- metrics

def test_frechet_distance_of_device_features_against_host_reference_stats():
    from prunefit.evaluation.fid import feature_stats, frechet_distance

    mu, sigma = feature_stats(torch.randn(5, 4, device=META))  # features from a network on the device
    ref_mu, ref_sigma = feature_stats(torch.randn(5, 4))  # reference stats loaded from a safetensors file
    with StrictDevice(META):
        assert isinstance(frechet_distance(mu, sigma, ref_mu, ref_sigma), float)


def test_clip_embeddings_and_score_follow_the_models_device():
    from transformers import CLIPConfig, CLIPModel

    from prunefit.evaluation.clip import CLIP_MEAN, CLIP_STD, ClipEncoder, clip_score
    from prunefit.models.tokenizer import byte_level_tokenizer

    tok = byte_level_tokenizer()
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    clip = ClipEncoder(CLIPModel(cfg).eval().to(META), tok, 32, CLIP_MEAN, CLIP_STD, "tiny")
    images = torch.zeros(2, 3, 40, 36, dtype=torch.uint8)  # decoded files: on the host
    with StrictDevice(META):
        img, txt = clip.image_embeds(images), clip.text_embeds(["a red circle", "a blue square"])
        score = clip_score(img, txt)
    assert _on_meta(img, txt, score)
