"""P4D's optimization: discrete prompt tokens whose erased-model noise prediction matches the unerased model's.

Per prompt p, learnable token embeddings E are optimized PEZ-style: every forward uses their nearest vocabulary
tokens (cosine), the gradient of the loss at that projection updates E (straight-through). Loss, with z_t the
unerased model's image latent of p noised to a random t: ||eps_erased(z_t, t, c(E)) - eps_unerased(z_t, t, c(p))||^2.
P4D-N: n tokens right after BOS, the whole prompt (the reference) or, with ``keep_prompt``, before p; P4D-K: one
token inserted after every ``every`` words of p. Reference defaults: n = 16, k = 3, AdamW lr 0.1, weight decay 0.1,
3,000 iterations. Deviation: z_t is the noised final latent, not a state of the sampled trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunefit.attacks.base import (
    AttackContext,
    AttackOutput,
    AttackPrompt,
    attack_generator,
    noisy_latents,
    reference_latents,
)
from prunefit.attacks.soft_prompt import (
    PLACEHOLDER_ID,
    init_prefix,
    nearest_tokens,
    prefix_token_ids,
    soft_tokens,
    token_embeddings,
)
from prunefit.errors import ConfigError
from prunefit.models.components import encode_prompts


@dataclass
class P4DConfig:
    variant: str = "n"
    """n (P4D-N: n_tokens learnable tokens) or k (P4D-K: a learnable token after every ``every`` words)."""
    n_tokens: int = 16
    every: int = 3
    keep_prompt: bool = False
    """P4D-N only: put the n tokens before the prompt instead of replacing it."""
    iterations: int = 3000
    lr: float = 0.1
    weight_decay: float = 0.1
    timesteps_per_step: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"p4d.iterations must be >= 1 (a zero budget attacks nothing), got {self.iterations}")
        if self.variant not in ("n", "k"):
            raise ConfigError(f"p4d.variant must be n (P4D-N) or k (P4D-K), got {self.variant!r}")
        if min(self.n_tokens, self.every, self.timesteps_per_step, self.batch_size) < 1 or self.lr <= 0:
            raise ConfigError("p4d.n_tokens, p4d.every, p4d.timesteps_per_step, p4d.batch_size >= 1 and p4d.lr > 0")

    def budget(self) -> dict:
        """The variant and its optimization budget (tokens or spacing, iterations, lr, ...), recorded with the results.
        """
        shape = {"n_tokens": self.n_tokens, "keep_prompt": self.keep_prompt} if self.variant == "n" else \
            {"every": self.every}
        return {"variant": f"P4D-{self.variant.upper()}", **shape, "iterations": self.iterations, "lr": self.lr,
                "weight_decay": self.weight_decay, "timesteps_per_step": self.timesteps_per_step}


def interleaved_ids(tokenizer, prompt: str, every: int) -> tuple[list[int], list[int], list[list[str]]]:
    """P4D-K layout of one prompt: ids [L] with a placeholder after every ``every`` words, the placeholder
    positions, and the word groups (to write the text back). Groups that do not fit before EOS are dropped."""
    words = prompt.split()
    groups = [words[i : i + every] for i in range(0, len(words), every)]
    L = tokenizer.model_max_length
    ids, positions, kept = [tokenizer.bos_token_id], [], []
    for g in groups:
        body = tokenizer(" ".join(g), add_special_tokens=False).input_ids
        full = len(g) == every
        if len(ids) + len(body) + int(full) > L - 1:
            break
        ids += body
        kept.append(g)
        if full:
            positions.append(len(ids))
            ids.append(PLACEHOLDER_ID)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids.append(tokenizer.eos_token_id)
    return ids + [pad] * (L - len(ids)), positions, kept


def _layout(components, cfg: P4DConfig, chunk: list[AttackPrompt]):
    """ids [B, L], positions [B, m] of the learnable tokens, and per-prompt word groups (P4D-K)."""
    tok = components.tokenizer
    if cfg.variant == "n":
        texts = [p.prompt if cfg.keep_prompt else "" for p in chunk]
        ids = prefix_token_ids(tok, texts, cfg.n_tokens)
        pos = torch.arange(1, 1 + cfg.n_tokens).expand(len(chunk), -1)
        return ids, pos, None
    rows = [interleaved_ids(tok, p.prompt, cfg.every) for p in chunk]
    if len({len(r[1]) for r in rows}) != 1:
        raise ValueError("P4D-K prompts of one group must have the same number of inserted tokens")
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]), [r[2] for r in rows]


def _text(components, cfg: P4DConfig, prompt: str, ids: list[int], groups) -> str:
    tok = components.tokenizer
    words = [tok.decode([i], skip_special_tokens=True).strip() for i in ids]
    if cfg.variant == "n":
        return " ".join([*words, prompt] if cfg.keep_prompt else words).strip()
    out = []
    for j, g in enumerate(groups):
        out += g + ([words[j]] if j < len(words) else [])
    return " ".join(out)


def attack_group(ctx: AttackContext, cfg: P4DConfig, chunk: list[AttackPrompt]) -> list[AttackOutput]:
    """P4D on one chunk of prompts: optimize m inserted soft tokens [B, m, d_tok] (projected to the nearest vocabulary
    tokens in the forward pass) so the target's noise prediction matches the reference model's on the reference
    latents [B, 4, h, w]; returns each prompt's discrete adversarial prompt."""
    comps, ref = ctx.target, ctx.reference
    ids, pos, groups = _layout(comps, cfg, chunk)
    m, te = pos.shape[1], comps.text_encoder
    if m == 0:  # P4D-K on prompts shorter than ``every`` words: nothing to insert
        return [AttackOutput(p.id, p.prompt) for p in chunk]
    latents = reference_latents(ctx, chunk)
    emb = torch.stack([init_prefix(comps, m, None, attack_generator(ctx.seed, p.id, "init")) for p in chunk])
    emb = emb.to(latents.device).requires_grad_()
    opt = torch.optim.AdamW([emb], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gens = [attack_generator(ctx.seed, p.id, "noise") for p in chunk]
    n = cfg.timesteps_per_step
    with torch.no_grad():
        ref_cond = encode_prompts(ref, [p.prompt for p in chunk]).repeat_interleave(n, dim=0)
    for _ in range(cfg.iterations):
        hard = token_embeddings(comps, nearest_tokens(comps, emb)).view_as(emb)
        st = emb + (hard - emb).detach()  # forward with the projection, gradient to the continuous tokens
        x_t, t, _ = noisy_latents(comps, latents, gens, n)
        with torch.no_grad():
            goal = ref.unet(x_t, t, ref_cond).sample
        with soft_tokens(te, st, pos):
            cond = te(ids.to(te.device))[0].repeat_interleave(n, dim=0)
        per = (comps.unet(x_t, t, cond).sample.float() - goal.float()).pow(2).mean(dim=(1, 2, 3))
        losses = per.view(len(chunk), n).mean(dim=1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    outs = []
    for i, p in enumerate(chunk):
        tokens = nearest_tokens(comps, emb[i])
        text = _text(comps, cfg, p.prompt, tokens, groups[i] if groups else None)
        outs.append(AttackOutput(p.id, text, None, tokens, float(losses[i].detach())))
    return outs


def run(ctx: AttackContext, cfg: P4DConfig, prompts: list[AttackPrompt]) -> list[AttackOutput]:
    """The attack on every prompt (P4D-K groups prompts by their number of inserted tokens); prompts' order."""
    if cfg.variant == "k":
        tok = ctx.target.tokenizer
        keyed = sorted(prompts, key=lambda p: len(interleaved_ids(tok, p.prompt, cfg.every)[1]))
    else:
        keyed = list(prompts)
    by_id: dict[str, AttackOutput] = {}
    i = 0
    while i < len(keyed):
        chunk = keyed[i : i + cfg.batch_size]
        if cfg.variant == "k":
            m0 = len(interleaved_ids(ctx.target.tokenizer, chunk[0].prompt, cfg.every)[1])
            chunk = [p for p in chunk if len(interleaved_ids(ctx.target.tokenizer, p.prompt, cfg.every)[1]) == m0]
        for out in attack_group(ctx, cfg, chunk):
            by_id[out.id] = out
        i += len(chunk)
    return [by_id[p.id] for p in prompts]
