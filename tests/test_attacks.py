"""Prompt attacks: the soft-prompt machinery (prefix hook, projection, nearest tokens)."""

from __future__ import annotations

import pytest
import torch

from prunefit.attacks.soft_prompt import (PLACEHOLDER_ID, discrete_prompt, encode_with_prefix, init_prefix,
                                          nearest_tokens, pgd_step, prefix_token_ids, project, token_embeddings,
                                          valid_token_ids)
from prunefit.errors import ConfigError
from prunefit.models.components import encode_prompts, load_components

PROMPTS = ["a large red skull on a black background", "a small blue circle on a white background"]


@pytest.fixture(scope="module")
def toy():
    return load_components("toyworld")


def test_no_prefix_equals_encode_prompts(toy, tiny):
    for comps in (toy, tiny):
        tok = comps.tokenizer
        ref_ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
        assert torch.equal(prefix_token_ids(tok, PROMPTS, 0), ref_ids)
        with torch.no_grad():
            assert torch.equal(encode_with_prefix(comps, PROMPTS, None), encode_prompts(comps, PROMPTS))


def test_prefix_of_token_embeddings_equals_typed_tokens(toy):
    """A prefix that is exactly the embeddings of tokens t gives the states of the prompt with t typed after BOS."""
    tok = toy.tokenizer
    word_ids = tok("drawing", add_special_tokens=False).input_ids
    prefix = token_embeddings(toy, word_ids)
    with torch.no_grad():
        soft = encode_with_prefix(toy, PROMPTS, prefix)
        typed = encode_prompts(toy, [f"drawing {p}" for p in PROMPTS])
    torch.testing.assert_close(soft, typed, rtol=0, atol=1e-5)


def test_prefix_ids_layout_and_truncation_keeps_eos(toy):
    tok = toy.tokenizer
    L, k = tok.model_max_length, 3
    long = " ".join(["red"] * 100)
    ids = prefix_token_ids(tok, [long, "a skull"], k)
    assert ids.shape == (2, L)
    assert ids[:, 0].tolist() == [tok.bos_token_id] * 2
    assert (ids[:, 1:1 + k] == PLACEHOLDER_ID).all()
    assert ids[0, -1].item() == tok.eos_token_id  # truncated, EOS kept at the last position
    body = tok("a skull", add_special_tokens=False).input_ids
    assert ids[1, 1 + k:1 + k + len(body)].tolist() == body
    with pytest.raises(ConfigError):
        prefix_token_ids(tok, ["x"], L - 1)


def test_gradient_reaches_prefix_and_encoder_weights(toy):
    prefix = init_prefix(toy, 4, None, torch.Generator().manual_seed(0)).requires_grad_()
    encode_with_prefix(toy, PROMPTS, prefix).pow(2).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    te = toy.text_encoder
    try:
        te.requires_grad_(True)
        prefix.grad = None
        out = encode_with_prefix(toy, PROMPTS, prefix)
        out.pow(2).sum().backward()
        emb = te.get_input_embeddings().weight.grad
        assert prefix.grad.abs().sum() > 0 and emb is not None
        used = prefix_token_ids(toy.tokenizer, PROMPTS, 4)[:, 5:].unique()
        assert emb[used].abs().sum() > 0  # the real prompt tokens' rows learn
    finally:
        te.requires_grad_(False)
        te.zero_grad(set_to_none=True)
    # the hook is gone after the block: the encoder is back to plain prompts
    with torch.no_grad():
        assert torch.equal(te(prefix_token_ids(toy.tokenizer, PROMPTS, 0))[0], encode_prompts(toy, PROMPTS))


def test_init_prefix_from_text_and_random(toy):
    ids = toy.tokenizer("skull", add_special_tokens=False).input_ids
    p = init_prefix(toy, 3, "skull")
    assert p.shape == (3, toy.text_encoder.get_input_embeddings().embedding_dim)
    torch.testing.assert_close(p, token_embeddings(toy, [ids[i % len(ids)] for i in range(3)]))
    a = init_prefix(toy, 5, None, torch.Generator().manual_seed(7))
    b = init_prefix(toy, 5, None, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        init_prefix(toy, 0)


def test_project_bounds():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4, 6, generator=g) * 3
    inf = project(d, 0.5, "linf")
    assert inf.abs().max() <= 0.5 and torch.equal(inf[d.abs() <= 0.5], d[d.abs() <= 0.5])
    l2 = project(d, 1.0, "l2")
    norms = l2.norm(dim=-1)
    assert (norms <= 1.0 + 1e-6).all()
    torch.testing.assert_close(l2 / norms[:, None], d / d.norm(dim=-1, keepdim=True))  # direction kept
    small = torch.full((2, 3), 0.1)
    assert torch.equal(project(small, 1.0, "l2"), small)
    with pytest.raises(ConfigError):
        project(d, 0.0)


def test_pgd_step_sign_and_ball():
    v = torch.tensor([0.0, 0.2, -0.2])
    g = torch.tensor([1.0, -2.0, 0.0])
    assert pgd_step(v, g, 0.1).tolist() == pytest.approx([-0.1, 0.3, -0.2])
    assert pgd_step(v, g, 0.1, descend=False).tolist() == pytest.approx([0.1, 0.1, -0.2])
    o = torch.tensor([1.0, 1.0, 1.0])
    out = pgd_step(o + torch.tensor([0.0, 0.24, 0.0]), g, 0.1, origin=o, eps=0.25)
    assert out.tolist() == pytest.approx([0.9, 1.25, 1.0])


def test_nearest_tokens_exact_and_valid(toy):
    valid = set(valid_token_ids(toy).tolist())
    ids = [toy.tokenizer("skull", add_special_tokens=False).input_ids[0], *valid_token_ids(toy)[[5, 300]].tolist()]
    for metric in ("cosine", "l2"):
        assert nearest_tokens(toy, token_embeddings(toy, ids), metric) == ids
    noisy = init_prefix(toy, 6, None, torch.Generator().manual_seed(1)) + 5 * torch.randn(6, 64)
    got = nearest_tokens(toy, noisy)
    assert len(got) == 6 and all(i in valid for i in got)
    assert toy.tokenizer.eos_token_id not in valid and toy.tokenizer.bos_token_id not in valid


def test_discrete_prompt_text(toy):
    ids = toy.tokenizer("drawing", add_special_tokens=False).input_ids
    assert discrete_prompt(toy, ids, "a red skull") == "drawing a red skull"
    assert discrete_prompt(toy, [], "a red skull") == "a red skull"
