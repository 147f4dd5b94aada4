"""Soft prompts in token-embedding space: a scoped prefix hook, prefix tokenization, PGD and projection to tokens.

The shared machinery of the white-box attacks (UnlearnDiffAtk, P4D) and of AdvUnlearn's inner attack. A prompt
is tokenized with ``k`` placeholder tokens right after BOS (``prefix_token_ids``); inside ``soft_prefix`` a
forward hook on the text encoder's token-embedding module (``text_encoder.get_input_embeddings()``, the stock
CLIPTextModel is wrapped, never forked) replaces the embeddings at positions 1..k with a (k, d_tok) tensor, so
gradients flow into it (and into the encoder's own weights when those require grad). Position embeddings,
attention and the final layer norm are the encoder's own. ``nearest_tokens`` maps soft tokens back to the
vocabulary by cosine similarity (the reference attacks project with PEZ's ``nn_project``: L2-normalized
embeddings, dot-product search, i.e. cosine) and ``discrete_prompt`` writes the projected prompt as text.

Shapes: B prompts, L = tokenizer.model_max_length, k prefix tokens, d_tok = token-embedding width,
D = text-encoder hidden width (d_tok = D for CLIP).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from prunefit.errors import ConfigError

PLACEHOLDER_ID = 0
"""Token id written at the prefix positions before the hook replaces them (any id that is not BOS / EOS: the
hidden states there never depend on it; EOS would move CLIP's pooled-output position)."""


def _token_embedding(text_encoder) -> torch.nn.Embedding:
    return text_encoder.get_input_embeddings()


def special_ids(tokenizer) -> set[int]:
    """BOS, EOS and pad ids (never valid inside a discrete prompt)."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {int(i) for i in ids if i is not None}


def prefix_token_ids(tokenizer, prompts: list[str], k: int) -> torch.Tensor:
    """Token ids [B, L]: BOS, ``k`` placeholders, the prompt's tokens (truncated so that EOS still fits), EOS,
    then padding. With ``k = 0`` these equal ``tokenizer(..., padding='max_length', truncation=True)``."""
    if k < 0:
        raise ConfigError(f"prefix length must be >= 0, got {k}")
    L = tokenizer.model_max_length
    if k + 2 > L:
        raise ConfigError(f"a {k}-token prefix does not fit the tokenizer's {L} positions (BOS + prefix + EOS)")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for text in prompts:
        body = tokenizer(text, add_special_tokens=False).input_ids[: L - 2 - k]
        ids = [bos] + [PLACEHOLDER_ID] * k + body + [eos]
        rows.append(ids + [pad] * (L - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@contextmanager
def soft_prefix(text_encoder, prefix: torch.Tensor, start: int = 1) -> Iterator[None]:
    """Within the block, token embeddings at positions ``start .. start+k-1`` of every encoded sequence are
    ``prefix`` ([k, d_tok], or [B, k, d_tok] for one prefix per prompt). Out of place: gradients reach
    ``prefix`` and, if they require grad, the embedding weights of the other positions."""
    module = _token_embedding(text_encoder)
    if prefix.ndim not in (2, 3) or prefix.shape[-1] != module.embedding_dim:
        raise ConfigError(f"prefix must be [k, {module.embedding_dim}] or [B, k, {module.embedding_dim}], "
                          f"got {list(prefix.shape)}")
    k = prefix.shape[-2]

    def hook(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, d_tok] with positions start .. start+k-1 replaced by the prefix."""
        p = prefix.to(out.dtype)
        p = p.expand(out.shape[0], -1, -1) if p.ndim == 2 else p
        return torch.cat([out[:, :start], p, out[:, start + k:]], dim=1)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def soft_tokens(text_encoder, embeds: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """Within the block, the token embeddings at ``positions`` [B, m] (sequence indices per prompt) are ``embeds``
    [B, m, d_tok]: soft tokens anywhere in the prompt (P4D-K inserts one every few words). Out of place."""
    module = _token_embedding(text_encoder)
    if embeds.ndim != 3 or embeds.shape[:2] != positions.shape or embeds.shape[-1] != module.embedding_dim:
        raise ConfigError(f"soft tokens must be [B, m, {module.embedding_dim}] with positions [B, m], got "
                          f"{list(embeds.shape)} and {list(positions.shape)}")

    def hook(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, d_tok] with ``positions`` [B, m] set to ``embeds`` [B, m, d_tok]."""
        rows = torch.arange(out.shape[0], device=out.device)[:, None].expand_as(positions)
        return out.index_put((rows, positions.to(out.device)), embeds.to(out.dtype))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_with_prefix(components, prompts: list[str], prefix: Optional[torch.Tensor]) -> torch.Tensor:
    """Text states [B, L, D] that SD conditions on, for ``prompts`` preceded by the soft tokens ``prefix``
    ([k, d_tok] or [B, k, d_tok]; None = the plain prompts, equal to ``encode_prompts``). Differentiable in
    ``prefix`` and in the text encoder's weights when they require grad."""
    te = components.text_encoder
    k = 0 if prefix is None else prefix.shape[-2]
    ids = prefix_token_ids(components.tokenizer, list(prompts), k).to(te.device)
    if prefix is None:
        return te(ids)[0]
    with soft_prefix(te, prefix.to(te.device)):
        return te(ids)[0]


def token_embeddings(components, ids: torch.Tensor | list[int]) -> torch.Tensor:
    """The embedding rows [n, d_tok] of token ids (detached copies)."""
    weight = _token_embedding(components.text_encoder).weight
    return weight[torch.as_tensor(ids, dtype=torch.long, device=weight.device)].detach().clone()


def init_prefix(components, k: int, init: Optional[str] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A starting prefix [k, d_tok] (detached; call ``.requires_grad_()`` to optimize it): the embeddings of
    ``init``'s tokens (cycled or cut to k), or of k vocabulary tokens drawn with ``generator`` (no BOS/EOS/pad)."""
    if k < 1:
        raise ConfigError(f"a soft prefix needs k >= 1 tokens, got {k}")
    tok = components.tokenizer
    if init is not None:
        ids = tok(init, add_special_tokens=False).input_ids
        if not ids:
            raise ConfigError(f"init text {init!r} has no tokens; give a word or leave init unset (random tokens)")
        ids = [ids[i % len(ids)] for i in range(k)]
    else:
        allowed = valid_token_ids(components)
        draw_on = generator.device if generator is not None else None
        pick = torch.randint(len(allowed), (k,), generator=generator, device=draw_on)
        ids = allowed[pick.cpu()].tolist()
    return token_embeddings(components, ids)


def valid_token_ids(components) -> torch.Tensor:
    """Vocabulary ids a discrete prompt may use, ascending [V']: all but BOS / EOS / pad, and only tokens that
    decode to printable text (byte-level pieces of multi-byte characters decode to U+FFFD and cannot be typed)."""
    tok = components.tokenizer
    cached = getattr(tok, "_prunefit_text_ids", None)
    n = _token_embedding(components.text_encoder).num_embeddings
    if cached is not None and len(cached) and int(cached[-1]) < n:
        return cached
    bad = special_ids(tok)
    ok = []
    for i in range(n):
        text = tok.decode([i]) if i not in bad else ""
        if text.strip() and "\ufffd" not in text and text.isprintable():
            ok.append(i)
    ids = torch.tensor(ok, dtype=torch.long)
    tok._prunefit_text_ids = ids
    return ids


def project(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """``delta`` [..., d] projected onto the eps-ball: 'linf' clamps every entry to [-eps, eps]; 'l2' rescales
    each last-axis vector (one token's perturbation) to L2 norm <= eps. Pure; returns a new tensor."""
    if eps <= 0:
        raise ConfigError(f"projection radius eps must be > 0, got {eps}")
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return delta * (eps / n).clamp(max=1.0)
    raise ConfigError(f"unknown norm {norm!r}; available: ['l2', 'linf']")


def pgd_step(value: torch.Tensor, grad: torch.Tensor, step_size: float, origin: Optional[torch.Tensor] = None,
             eps: Optional[float] = None, norm: str = "linf", descend: bool = True) -> torch.Tensor:
    """One signed-gradient step: ``value - step_size * sign(grad)`` (``+`` when ``descend`` is False), then, when
    ``eps`` is set, ``origin + project(new - origin, eps, norm)`` (origin defaults to 0: ``value`` is itself a
    perturbation). All tensors share one shape [...]; pure, returns a new detached tensor."""
    with torch.no_grad():
        step = step_size * grad.sign()
        new = value - step if descend else value + step
        if eps is not None:
            base = torch.zeros_like(new) if origin is None else origin
            new = base + project(new - base, eps, norm)
    return new.detach()


def nearest_tokens(components, prefix: torch.Tensor, metric: str = "cosine") -> list[int]:
    """For each soft token of ``prefix`` [k, d_tok], the nearest typeable vocabulary token (``valid_token_ids``) by
    ``metric``: 'cosine' (the reference attacks' projection) or 'l2'."""
    weight = _token_embedding(components.text_encoder).weight.detach()
    allowed = valid_token_ids(components).to(weight.device)
    vocab = weight[allowed].float()
    p = prefix.detach().to(weight.device).float().reshape(-1, weight.shape[1])
    if metric == "cosine":
        score = F.normalize(p, dim=-1) @ F.normalize(vocab, dim=-1).T
    elif metric == "l2":
        score = -torch.cdist(p, vocab)
    else:
        raise ConfigError(f"unknown nearest-token metric {metric!r}; available: ['cosine', 'l2']")
    return allowed[score.argmax(dim=-1)].tolist()


def discrete_prompt(components, token_ids: list[int], prompt: str) -> str:
    """The attacked prompt as text: the decoded prefix tokens, a space, then ``prompt``. Re-tokenizing the text
    may merge BPE pieces differently from ``token_ids``; attacks judge the text, as a user would type it."""
    prefix = components.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
    return f"{prefix} {prompt}".strip() if prefix else prompt
