"""Build CLIP-style BPE tokenizers locally (no download): byte-level, or with merges learnt from a corpus.

Both produce a stock ``transformers.CLIPTokenizer`` with CLIP's byte-to-unicode alphabet, ``</w>``
end-of-word suffix and ``<|startoftext|>`` / ``<|endoftext|>`` specials (padding with
``<|endoftext|>`` as Stable Diffusion's tokenizer does), so it saves and loads with the pipeline.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer pattern, restricted to the ASCII classes our captions use.
_WORD_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z]+|[0-9]|[^\sa-zA-Z0-9]+")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP / GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _base_vocab() -> list[str]:
    chars = list(bytes_to_unicode().values())
    return chars + [c + "</w>" for c in chars]


def _make(vocab_tokens: list[str], merges: list[tuple[str, str]], model_max_length: int) -> CLIPTokenizer:
    vocab = {tok: i for i, tok in enumerate(vocab_tokens + [BOS, EOS])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def byte_level_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A merge-free CLIP tokenizer (514 tokens): one token per byte. Instant; used by tiny test models."""
    return _make(_base_vocab(), [], model_max_length)


def _symbols(word: str) -> tuple[str, ...]:
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    chars[-1] = chars[-1] + "</w>"
    return tuple(chars)


def learn_bpe_merges(corpus: Iterable[str], vocab_size: int) -> list[tuple[str, str]]:
    """Learn BPE merges on ``corpus`` (CLIP normalization: lower-case words) until ``vocab_size`` tokens.

    Deterministic: ties between equally frequent pairs are broken by the pair's text.
    """
    words = Counter(w for text in corpus for w in _WORD_RE.findall(text.lower().strip()))
    seqs = {w: _symbols(w) for w in words}
    merges: list[tuple[str, str]] = []
    n_tokens = len(_base_vocab()) + 2
    while n_tokens < vocab_size:
        pairs: Counter = Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = tuple(out)
        n_tokens += 1
    return merges


def trained_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose merges are learnt from ``corpus`` (the toy world's captions)."""
    merges = learn_bpe_merges(corpus, vocab_size)
    tokens = _base_vocab() + [a + b for a, b in merges]
    return _make(tokens, merges, model_max_length)
