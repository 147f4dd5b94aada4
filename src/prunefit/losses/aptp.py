"""APTP's router losses and relaxations as pure functions (Ganjdanesh et al., "Not All Prompts Are Made
Equal", ECCV 2024; hyper-parameters from the official code, see official-implementation.md §1.5-1.7)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gumbel_noise(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Standard Gumbel noise [shape] on ``device``, drawn on the generator's device and moved (a seed gives the
    same noise whatever device the data is on; a CPU generator cannot draw on CUDA)."""
    u = torch.rand(shape, generator=generator, device=generator.device if generator is not None else device)
    return -torch.log(-torch.log(u.to(device) + 1e-20) + 1e-20)


GUMBEL_MEDIAN = 0.36651292058166435
"""-log(log 2): the median of standard Gumbel noise. A gate whose noise-free relaxation uses it is >= 0.5
exactly when the noisy training relaxation keeps it with probability >= 1/2."""


def gumbel_sigmoid(logits: torch.Tensor, base: float = 3.0, temperature: float = 0.4,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """sigmoid((logits + noise + base) / T); ``noise=None`` gives the noise-free (inference) relaxation."""
    z = logits + base if noise is None else logits + noise + base
    return torch.sigmoid(z / temperature)


def importance_logits(depth_logits: torch.Tensor) -> torch.Tensor:
    """Depth logits -> logits of nested keep-probabilities: p = softmax(l); f_j = sum_{k <= n-1-j} p_k,
    so f_0 = 1 >= f_1 >= ...; returns logit(f). [B, n] -> [B, n] in importance rank order."""
    p = depth_logits.softmax(-1)
    f = p.flip(-1).cumsum(-1).flip(-1)  # f_j = sum_{k >= j} p_k: f_0 = 1, non-increasing
    f = f.clamp(1e-6, 1 - 1e-6)
    return torch.log(f) - torch.log1p(-f)


def straight_through_hard(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1[x >= threshold] forward, identity gradient backward."""
    hard = (x >= threshold).to(x.dtype)
    return (hard - x).detach() + x


def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             distributed: bool = False) -> torch.Tensor:
    """SwAV-style Sinkhorn-Knopp: a transport plan [B, K] with uniform marginals over K experts.

    Q = exp(scores / eps); alternately normalize expert rows to 1/K and sample columns to 1/B
    (summed over all processes when ``distributed``); returns Q * B (each row sums to ~1).
    """
    q = torch.exp((scores - scores.max()) / epsilon).T  # [K, B]; the shift cancels in the normalizations
    b_local, k = q.shape[1], q.shape[0]
    world = 1
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
    b = b_local * world

    def allsum(t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all processes in place when distributed (same shape), else unchanged."""
        if world > 1:
            torch.distributed.all_reduce(t)
        return t

    q = q / allsum(q.sum().clone())
    for _ in range(iterations):
        q = q / allsum(q.sum(dim=1, keepdim=True).clone()) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def sinkhorn_log_potentials(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 100) -> torch.Tensor:
    """Expert potentials log v [K] of the balanced plan Q = diag(u) exp(S / eps) diag(v) for scores [B, K].

    argmax_k (S[b, k] / eps + log v_k) is the plan's assignment of row b; with v fixed it routes any single
    prompt deterministically while keeping the loads of the calibration set uniform.
    """
    logk = scores.double() / epsilon
    b, k = logk.shape
    log_u = torch.zeros(b, dtype=torch.float64, device=logk.device)
    log_v = torch.zeros(k, dtype=torch.float64, device=logk.device)
    for _ in range(iterations):
        log_u = -math.log(b) - torch.logsumexp(logk + log_v[None, :], dim=1)
        log_v = -math.log(k) - torch.logsumexp(logk + log_u[:, None], dim=0)
    return (log_v - log_v.max()).float()


def contrastive_loss(arch: torch.Tensor, prompt_emb: torch.Tensor, tau_arch: float = 0.03,
                     tau_prompt: float = 0.03) -> torch.Tensor:
    """APTP's contrastive loss: architectures of similar prompts should be similar.

    A = softmax(cos(arch, arch) / tau_a); T = softmax(cos(z, z) / tau_z); BCE(A, T). [N, D], [N, E] -> scalar.
    """
    a = F.normalize(arch, dim=-1)
    z = F.normalize(prompt_emb.float(), dim=-1)
    sim_a = torch.softmax(a @ a.T / tau_arch, dim=-1)
    sim_z = torch.softmax(z @ z.T / tau_prompt, dim=-1)
    return F.binary_cross_entropy(sim_a.clamp(1e-7, 1 - 1e-7), sim_z.detach())


def resource_loss(ratio: torch.Tensor, target: float, kind: str = "log") -> torch.Tensor:
    """Distance of the mean MAC ratio from ``target``: 'log' |log(r / p)| (official default), 'mae', 'mse'."""
    r = ratio.mean()
    if kind == "log":
        return (torch.log(r) - torch.log(torch.tensor(target, dtype=r.dtype, device=r.device))).abs()
    if kind == "mae":
        return (r - target).abs()
    if kind == "mse":
        return (r - target) ** 2
    raise ValueError(f"unknown resource loss {kind!r}; use log, mae or mse")
