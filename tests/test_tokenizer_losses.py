"""Locally built CLIP tokenizers, and the diffusion loss math against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPTokenizer

from prunefit.losses.diffusion import diffusion_target, min_snr_weights, snr, weighted_mse
from prunefit.models.tokenizer import byte_level_tokenizer, bytes_to_unicode, learn_bpe_merges, trained_bpe_tokenizer


def test_bpe_learns_whole_words_and_round_trips(tmp_path):
    corpus = ["a red circle by claude dots"] * 5 + ["a blue square"]
    tok = trained_bpe_tokenizer(corpus, vocab_size=600)
    toks = tok.convert_ids_to_tokens(tok("A red circle, by Claude Dots")["input_ids"])
    assert toks == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", ",</w>", "by</w>", "claude</w>",
                    "dots</w>", "<|endoftext|>"]
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a blue square")["input_ids"] == tok("a blue square")["input_ids"]
    assert learn_bpe_merges(corpus, 600) == learn_bpe_merges(corpus, 600)


def test_byte_level_pads_with_eos():
    tok = byte_level_tokenizer()
    assert len(tok) == 514
    ids = tok("ab", padding="max_length", max_length=6)["input_ids"]
    order = list(bytes_to_unicode())  # vocab order: CLIP's byte order, then the same with </w>
    a, b = order.index(ord("a")), order.index(ord("b"))
    assert ids == [tok.bos_token_id, a, 256 + b, tok.eos_token_id, tok.eos_token_id, tok.eos_token_id]


def test_snr_and_min_snr_weights_by_hand():
    acp = torch.tensor([0.9, 0.5, 0.1])
    t = torch.tensor([0, 1, 2])
    s = snr(acp, t)
    assert torch.allclose(s, torch.tensor([9.0, 1.0, 1 / 9]))
    eps = min_snr_weights(s, 5.0, "epsilon")
    assert torch.allclose(eps, torch.tensor([5 / 9, 1.0, 1.0]))
    v = min_snr_weights(s, 5.0, "v_prediction")
    assert torch.allclose(v, torch.tensor([5 / 10, 1 / 2, (1 / 9) / (1 / 9 + 1)]))
    legacy = min_snr_weights(s, 5.0, "v_prediction", formula="legacy")  # official code: min(snr+1, g)/(snr+1)
    assert torch.allclose(legacy, torch.tensor([5 / 10, 2 / 2, 1.0]))


def test_v_target_and_weighted_mse():
    acp = torch.tensor([0.64])
    x0, noise = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0)
    v = diffusion_target("v_prediction", x0, noise, acp, torch.tensor([0]))
    assert v.item() == pytest.approx(0.8 * 1.0 - 0.6 * 2.0)
    assert diffusion_target("epsilon", x0, noise, acp, torch.tensor([0])) is noise
    pred, tgt = torch.zeros(2, 3), torch.tensor([[1.0, 1, 1], [2, 2, 2]])
    assert weighted_mse(pred, tgt).item() == pytest.approx((1 + 4) / 2)
    assert weighted_mse(pred, tgt, torch.tensor([1.0, 0.5])).item() == pytest.approx((1 + 2) / 2)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        diffusion_target("sample", x0, noise, acp, torch.tensor([0]))
    assert math.isfinite(weighted_mse(pred, tgt).item())
