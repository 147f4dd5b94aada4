"""A random-weight CLIP small enough for tests (CLIP score, zero-shot metrics), saved with the byte-level tokenizer."""

from __future__ import annotations

from pathlib import Path


def save_tiny_clip(directory: Path) -> Path:
    """Write a 1-layer, 32-wide random CLIP (seed 0) and its tokenizer into ``directory``; returns it."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from prunefit.models.tokenizer import byte_level_tokenizer

    tok = byte_level_tokenizer()
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)
