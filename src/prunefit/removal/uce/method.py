"""UCE's closed form, and its application to every cross-attention K/V projection of a UNet.

For one projection W [d_out, d]: erase rows c (token embeddings of an erased concept) with targets
v* = W_old c' (the guide concept's rows), preserve rows p with targets W_old p:

  W_new = (lam W + e_s sum v* c^T + p_s sum (W p) p^T) (lam I + e_s sum c c^T + p_s sum p p^T)^-1

the minimizer of lam ||W' - W||^2 + e_s sum ||W' c - v*||^2 + p_s sum ||W' p - W p||^2. Defaults follow the
reference: lam 0.5, erase scale 1, preserve scale max(0.1, 1/|P|), technique 'replace', token rows from
the concept's last word to the end of the sequence. The preserve set always holds "" plus the given
concepts, minus any that contain an erased concept or are contained in one (case-insensitive): the
reference kept "Pablo Picasso" while erasing "Picasso".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from prunefit.errors import ConfigError
from prunefit.removal.context import RemovalContext, cross_attentions
from prunefit.removal.entry import EditResult


@dataclass
class UCEConfig:
    concepts: list[str] = field(default_factory=list)
    guides: list[str] = field(default_factory=lambda: ["art"])
    """One guide concept for all erased concepts, or one each ("art" for artists, "person" for nudity)."""
    preserve: list[str] = field(default_factory=list)
    lam: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: Optional[float] = None
    """None = max(0.1, 1 / |preserve set|)."""
    with_to_k: bool = True
    kind_defaults: ClassVar[dict[str, dict]] = {"unsafe": {"guides": ["person"]}, "object": {"guides": [" "]}}
    """Guides per kind of concept (``prunefit.config.concepts``) on a model that carries none: the paper's "person"
    for nudity (§C.1.3), the reference's unconditional " " for objects (``train_erase.py`` without
    ``--guided_concepts``, its Imagenette runs: "towards_uncond"); artist styles keep "art" (the default above)."""

    def __post_init__(self) -> None:
        if self.guides and len(self.guides) not in (1, len(self.concepts) or 1):
            raise ConfigError("uce.guides must hold one guide or one per concept")
        if self.lam <= 0 or self.erase_scale < 0:
            raise ConfigError("uce.lam must be > 0 and uce.erase_scale >= 0")


def uce_closed_form(w: torch.Tensor, erase_c: torch.Tensor, erase_v: torch.Tensor, preserve_c: torch.Tensor,
                    lam: float, erase_scale: float, preserve_scale: float) -> torch.Tensor:
    """W [o, d]; erase rows C_e [n, d] with targets V [n, o]; preserve rows C_p [m, d] -> W_new [o, d]."""
    w64, ce, ve, cp = w.double(), erase_c.double(), erase_v.double(), preserve_c.double()
    d = w.shape[1]
    lhs = lam * w64 + erase_scale * ve.T @ ce + preserve_scale * (w64 @ cp.T) @ cp
    eye = torch.eye(d, dtype=torch.float64, device=w.device)
    rhs = lam * eye + erase_scale * ce.T @ ce + preserve_scale * cp.T @ cp
    return torch.linalg.solve(rhs, lhs.T).T.to(w.dtype)  # rhs is symmetric: X rhs = lhs  <=>  rhs X^T = lhs^T


def filter_preserve(preserve: list[str], erased: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): drop preserve concepts that contain or are contained in an erased one."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    er = [norm(e) for e in erased]
    kept, dropped = [], []
    for p in preserve:
        q = norm(p)
        (dropped if any(e in q or (q and q in e) for e in er) else kept).append(p)
    return kept, dropped


def _rows(ctx: RemovalContext, prompt: str, full: bool = False) -> torch.Tensor:
    emb = ctx.text([prompt])[0]
    if full:
        return emb
    n_tok = int(ctx.tokens([prompt]).attention_mask.sum())
    return emb[max(n_tok - 2, 0):]


def apply(ctx: RemovalContext, cfg: UCEConfig) -> EditResult:
    """UCE: closed-form edit of the cross-attention projections mapping each concept's text states to its guide's while
    preserving the preserve prompts, in place; returns the edit's info."""
    if not cfg.concepts:
        raise ConfigError("uce needs at least one concept (removal.concepts)")
    guides = cfg.guides * len(cfg.concepts) if len(cfg.guides) == 1 else list(cfg.guides)
    kept, dropped = filter_preserve(list(cfg.preserve), cfg.concepts)
    preserve = [""] + kept
    p_scale = cfg.preserve_scale if cfg.preserve_scale is not None else max(0.1, 1.0 / len(preserve))
    pairs = []
    for old, new in zip(cfg.concepts, guides):
        a, b = _rows(ctx, old), _rows(ctx, new)
        n = min(len(a), len(b))
        pairs.append((a[:n], b[:n]))
    ce = torch.cat([a for a, _ in pairs])
    cp = torch.cat([_rows(ctx, p, full=True) for p in preserve])
    edited = []
    with torch.no_grad():
        for name, attn in cross_attentions(ctx.unet):
            for proj_name in (("to_k", "to_v") if cfg.with_to_k else ("to_v",)):
                proj = getattr(attn, proj_name)
                w = proj.weight.data
                v = torch.cat([b @ w.T for _, b in pairs])  # technique 'replace': v* = W_old c_guide
                proj.weight.data = uce_closed_form(w, ce, v, cp, cfg.lam, cfg.erase_scale, p_scale)
                edited.append(f"{name}.{proj_name}")
    return EditResult({"edited": edited, "preserve": preserve, "dropped_from_preserve": dropped,
                       "preserve_scale": p_scale, "guides": guides})
