"""APTP's prompt router: sentence encoder -> architecture predictor -> codebook of K architecture codes.

- ``ArchitecturePredictor``: one linear head per width group and one for the depth gates (orthogonal
  init, zero bias), mapping a prompt embedding to architecture logits [B, D].
- ``Router``: the predictor plus a codebook [K, D]. Relaxation: Gumbel-sigmoid (base 3, T 0.4) on width
  logits, importance-ordered nested keep-probabilities on depth logits (outer blocks pruned last).
  Training routes with Sinkhorn-Knopp (uniform expert loads, across processes); inference routes by
  cosine similarity of *noise-free* relaxations, so a prompt's expert never depends on its batch.
- Experts are the noise-free hard codes, with at least one gate kept in every width group.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from prunefit.config.schema import RouterSection
from prunefit.losses.aptp import (
    GUMBEL_MEDIAN,
    gumbel_noise,
    gumbel_sigmoid,
    importance_logits,
    sinkhorn,
    sinkhorn_log_potentials,
)
from prunefit.pruning.spec import GateSpec


def importance_order(spec: GateSpec) -> list[int]:
    """Depth gates from most to least protected: resolution levels from the outside in; at each level the
    up block's gates (last first), then the down block's. Reproduces the official SD 2.1 order
    [13, 12, 0, 1, 11, 10, 2, 3, 9, 8, 4, 5, 7, 6]."""
    def block(name: str) -> tuple[str, int]:
        """('down_blocks' or 'up_blocks', block index) of a depth gate's module path."""
        parts = name.split(".")
        return parts[0], int(parts[1])

    downs = sorted({block(d.name)[1] for d in spec.depth if d.name.startswith("down_blocks")})
    ups = sorted({block(d.name)[1] for d in spec.depth if d.name.startswith("up_blocks")})
    n_levels = max(len(downs), len(ups))
    order: list[int] = []
    for level in range(n_levels):
        up_idx = (max(ups) - level) if ups else None
        in_up = [i for i, d in enumerate(spec.depth) if up_idx is not None and block(d.name) == ("up_blocks", up_idx)]
        in_down = [i for i, d in enumerate(spec.depth) if block(d.name) == ("down_blocks", level)]
        order += list(reversed(in_up)) + in_down
    return order


class ArchitecturePredictor(nn.Module):
    """Prompt embedding [B, E] -> architecture logits [B, D] (one linear head per width group + depth)."""

    def __init__(self, spec: GateSpec, embed_dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(embed_dim, g.size) for g in spec.width])
        self.depth = nn.Linear(embed_dim, spec.depth_dim)
        for m in [*self.heads, self.depth]:
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings z [B, E] -> architecture logits [B, D]: width heads then depth."""
        return torch.cat([h(z) for h in self.heads] + [self.depth(z)], dim=-1)


class Router(nn.Module):
    """Predictor + codebook; relaxations, Sinkhorn routing, deterministic inference routing."""

    def __init__(self, spec: GateSpec, embed_dim: int, cfg: RouterSection, *, num_experts: int) -> None:
        super().__init__()
        self.spec, self.cfg, self.num_experts = spec, cfg, num_experts
        self.predictor = ArchitecturePredictor(spec, embed_dim)
        self.codebook = nn.Parameter(torch.empty(num_experts, spec.dim))
        nn.init.orthogonal_(self.codebook)
        order = torch.tensor(importance_order(spec), dtype=torch.long)
        self.register_buffer("depth_order", order, persistent=False)
        self.register_buffer("template", spec.group_template().sqrt(), persistent=False)
        self.register_buffer("route_log_v", torch.zeros(num_experts))

    def relax(self, logits: torch.Tensor, generator: torch.Generator | None = None, noisy: bool = True) -> torch.Tensor:
        """Architecture logits [B, D] -> gate values in (0, 1) [B, D] (Gumbel-sigmoid, importance-ordered depth).

        ``noisy=False`` puts the noise at its median, so a gate is >= 0.5 exactly when training samples kept it
        with probability >= 1/2 (zero noise would prune more than training saw: the Gumbel median is 0.37)."""
        w, d = logits[..., : self.spec.width_dim], logits[..., self.spec.width_dim :]
        nw = gumbel_noise(w.shape, generator, w.device) if noisy else torch.full_like(w, GUMBEL_MEDIAN)
        ranked = importance_logits(d)  # rank r = nested keep-logit of the r-th most protected gate
        nd = gumbel_noise(ranked.shape, generator, d.device) if noisy else torch.full_like(ranked, GUMBEL_MEDIAN)
        s_rank = gumbel_sigmoid(ranked, self.cfg.base, self.cfg.temperature, nd)
        depth = torch.empty_like(s_rank)
        depth[..., self.depth_order] = s_rank
        return torch.cat([gumbel_sigmoid(w, self.cfg.base, self.cfg.temperature, nw), depth], dim=-1)

    def normalized(self, gates: torch.Tensor, hard: bool = True) -> torch.Tensor:
        """APTP's width-depth normalization for similarity: hard (straight-through) gates, width of
        depth-gated units scaled by their depth gate, groups weighted by 1/sqrt(size); then L2-normalized.
        ``hard=False`` keeps the soft values (continuous scores: no ties between prompts at inference).
        gates [B, D] -> [B, D]."""
        g = gates
        if hard:
            g = ((gates >= 0.5).to(gates.dtype) - gates).detach() + gates
        widths, depth = self.spec.split(g)
        unit_depth = {dg.module: depth[..., j] for j, dg in enumerate(self.spec.depth)}
        widths = [w * unit_depth[grp.unit].unsqueeze(-1) if grp.unit in unit_depth else w
                  for grp, w in zip(self.spec.width, widths)]
        return F.normalize(self.spec.join(widths, depth) * self.template, dim=-1)

    def route_train(self, z: torch.Tensor, generator: torch.Generator | None = None,
                    distributed: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: (hypernet sample s [B, D], routed codes z_q [B, D], expert ids [B])."""
        logits = self.predictor(z)
        s = self.relax(logits, generator)
        codes = self.relax(self.codebook, generator)
        with torch.no_grad():
            scores = self.normalized(self.relax(logits, generator)) @ self.normalized(codes).T
            plan = sinkhorn(scores, self.cfg.sinkhorn_epsilon, self.cfg.sinkhorn_iterations, distributed)
            # equal codes (e.g. at initialization) give tied plans; break ties at random, not towards expert 0
            draw_on = generator.device if generator is not None else plan.device
            plan = plan + 1e-6 * torch.rand(plan.shape, generator=generator, device=draw_on).to(plan.device)
            idx = plan.argmax(-1)
        return s, codes[idx], idx

    @torch.no_grad()
    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, K] of the prompts' and the experts' noise-free relaxations."""
        s = self.normalized(self.relax(self.predictor(z), noisy=False), hard=False)
        c = self.normalized(self.relax(self.codebook, noisy=False), hard=False)
        return s @ c.T

    @torch.no_grad()
    def calibrate(self, z: torch.Tensor, iterations: int = 100) -> torch.Tensor:
        """Fix the experts' Sinkhorn potentials on calibration prompts (e.g. training captions), so inference
        routing keeps the uniform loads training had; returns the loads on ``z`` after calibration.
        z [B, E] prompt embeddings -> loads [K] (prompts per expert)."""
        self.route_log_v.copy_(sinkhorn_log_potentials(self.scores(z), self.cfg.sinkhorn_epsilon, iterations))
        return torch.bincount(self.route(z), minlength=self.num_experts)

    @torch.no_grad()
    def route(self, z: torch.Tensor) -> torch.Tensor:
        """Inference: argmax_k of score / eps + log v_k (calibrated potentials); a prompt's expert depends only
        on that prompt, never on its batch. z [B, E] prompt embeddings -> expert ids [B]."""
        return (self.scores(z) / self.cfg.sinkhorn_epsilon + self.route_log_v).argmax(-1)

    @torch.no_grad()
    def expert_codes(self) -> torch.Tensor:
        """Hard architectures of the K experts [K, D] from noise-free codes; >= 1 gate per width group."""
        soft = self.relax(self.codebook, noisy=False)
        hard = (soft >= 0.5).float()
        widths, depth = self.spec.split(hard)
        soft_w, _ = self.spec.split(soft)
        fixed = []
        for w, sw in zip(widths, soft_w):
            empty = w.sum(-1) == 0
            if empty.any():
                w = w.clone()
                w[empty, sw[empty].argmax(-1)] = 1.0
            fixed.append(w)
        return self.spec.join(fixed, depth)

    def save(self, path: str | Path, meta: dict) -> None:
        """Write the router's weights (router.safetensors) and ``meta`` with its config (router.json) into ``path``."""
        import json

        from safetensors.torch import save_file

        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "router.safetensors"))
        (d / "router.json").write_text(json.dumps({**meta, **asdict(self.cfg), "num_experts": self.num_experts},
                                                  indent=1))


def load_router(path: str | Path, unet) -> tuple[Router, dict]:
    """Load a saved router for ``unet`` (its gate layout must match the one the router was trained on)."""
    import json

    from safetensors.torch import load_file

    from prunefit.errors import ModelLoadError
    from prunefit.pruning.spec import gate_spec

    d = Path(path)
    meta_file = d / "router.json"
    if not meta_file.is_file():
        raise ModelLoadError(f"{d} holds no router (router.json missing); pass the output_dir of `prunefit prune`")
    try:
        meta = json.loads(meta_file.read_text())
        cfg = RouterSection(**{f.name: meta[f.name] for f in fields(RouterSection) if f.name in meta})
        spec = gate_spec(unet, meta["ffn_groups"])
        if spec.dim != meta["spec_dim"]:
            raise ValueError(f"layout has {spec.dim} gates, router {meta['spec_dim']}")
        state = load_file(str(d / "router.safetensors"))
        embed_dim = state["predictor.depth.weight"].shape[1]
        router = Router(spec, embed_dim, cfg, num_experts=meta["num_experts"])
        router.load_state_dict(state)
    except (KeyError, ValueError, json.JSONDecodeError, FileNotFoundError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load router from {d}: {str(exc).splitlines()[0][:160]}") from None
    return router.eval(), meta
