"""Ring-A-Bell's search: a concept vector in text-embedding space, then a genetic search over discrete prompts.

Concept vector c = mean over prompt pairs of E(with concept) - E(without) (E: the reference text encoder's
states [L, D]; pairs from ``pairs``, else each attack prompt and the prompt with the concept removed). For each
prompt the target is E(neutral) + eta * c (neutral = the prompt without the concept), and a genetic algorithm
over token sequences of ``length`` tokens minimizes the mean squared distance of their states to it: elitism,
tournament parents, uniform crossover, per-token mutation. Never touches the attacked model (black-box).
Reference defaults: K = 16 tokens, population 200, 3,000 generations, mutation rate 0.25, crossover rate 0.5;
eta = 3 for nudity (the reference's setting, as RECE's maintainers restate it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from prunefit.attacks.base import AttackContext, AttackOutput, AttackPrompt, attack_generator
from prunefit.attacks.soft_prompt import valid_token_ids
from prunefit.errors import ConfigError
from prunefit.models.components import encode_prompts


@dataclass
class RingABellConfig:
    eta: float = 3.0
    length: int = 16
    population: int = 200
    generations: int = 3000
    mutation_rate: float = 0.25
    crossover_rate: float = 0.5
    elite: int = 10
    pairs: list[list[str]] = field(default_factory=list)
    """[with concept, without] prompt pairs for the concept vector; empty = the attack prompts themselves."""
    ban_concept_tokens: bool = True
    """Keep the concept's own tokens out of the search (the prompt must not simply say the concept)."""

    def __post_init__(self) -> None:
        if self.generations < 1:
            raise ConfigError(f"ringabell.generations must be >= 1 (a zero budget attacks nothing), got "
                              f"{self.generations}")
        if self.length < 1 or self.population < 2 or not 0 <= self.elite < self.population:
            raise ConfigError("ringabell: length >= 1, population >= 2 and 0 <= elite < population")
        if not (0 <= self.mutation_rate <= 1 and 0 <= self.crossover_rate <= 1):
            raise ConfigError("ringabell.mutation_rate and ringabell.crossover_rate must be in [0, 1]")
        if any(len(p) != 2 for p in self.pairs):
            raise ConfigError("ringabell.pairs must be [with concept, without] pairs")

    def budget(self) -> dict:
        """The genetic search's budget (eta, length, population, generations, rates), recorded with the results."""
        return {"eta": self.eta, "length": self.length, "population": self.population,
                "generations": self.generations, "mutation_rate": self.mutation_rate,
                "crossover_rate": self.crossover_rate}


def without_concept(prompt: str, concept: str) -> str:
    """``prompt`` with ``concept`` removed (case-insensitive), spaces tidied."""
    out = re.sub(re.escape(concept), "", prompt, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", out).strip(" ,")


@torch.no_grad()
def concept_vector(components, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean of E(with) - E(without) over ``pairs`` -> [L, D]."""
    w = encode_prompts(components, [a for a, _ in pairs])
    wo = encode_prompts(components, [b for _, b in pairs])
    return (w - wo).mean(dim=0)


@torch.no_grad()
def sequence_states(components, tokens: torch.Tensor) -> torch.Tensor:
    """States [P, L, D] of token sequences [P, K] written as BOS, tokens, EOS, padding."""
    tok = components.tokenizer
    L = tok.model_max_length
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    P, K = tokens.shape
    ids = torch.full((P, L), pad, dtype=torch.long)
    ids[:, 0] = tok.bos_token_id
    ids[:, 1 : 1 + K] = tokens
    ids[:, 1 + K] = tok.eos_token_id
    te = components.text_encoder
    return te(ids.to(te.device))[0]


def _evolve(pop: torch.Tensor, fitness: torch.Tensor, vocab: torch.Tensor, cfg: RingABellConfig,
            g: torch.Generator) -> torch.Tensor:
    """One generation: keep the ``elite`` best, fill with mutated crossovers of tournament-chosen parents.
    pop [P, K] token ids, fitness [P] (distance: lower is fitter), vocab [V] -> the next population [P, K]."""
    P, K = pop.shape
    order = fitness.argsort()  # lower distance is fitter
    elite = pop[order[: cfg.elite]]
    n = P - cfg.elite
    ranked = pop[order]
    a, b = (ranked[torch.minimum(torch.randint(P, (n,), generator=g), torch.randint(P, (n,), generator=g))]
            for _ in range(2))  # binary tournaments: the fitter (lower rank) of two random members
    cross = (torch.rand(n, 1, generator=g) < cfg.crossover_rate) & (torch.rand(n, K, generator=g) < 0.5)
    child = torch.where(cross, b, a)
    mutate = torch.rand(n, K, generator=g) < cfg.mutation_rate
    child = torch.where(mutate, vocab[torch.randint(len(vocab), (n, K), generator=g)], child)
    return torch.cat([elite, child])


def search(components, targets: torch.Tensor, vocab: torch.Tensor, cfg: RingABellConfig,
           gens: list[torch.Generator]) -> list[tuple[list[int], float]]:
    """The genetic search for each target [Np, L, D] (prompt i evolves with ``gens[i]``; populations are encoded
    in one batch): the best token sequence of each and its distance."""
    n, P = len(targets), cfg.population
    pops = [vocab[torch.randint(len(vocab), (P, cfg.length), generator=g)] for g in gens]

    def distances() -> torch.Tensor:
        """Mean squared distance [Np, P] of every population member's text states to its prompt's target."""
        states = sequence_states(components, torch.cat(pops)).view(n, P, *targets.shape[1:])
        return (states - targets[:, None]).pow(2).mean(dim=(2, 3)).cpu()

    for _ in range(cfg.generations):
        dist = distances()
        pops = [_evolve(pop, d, vocab, cfg, g) for pop, d, g in zip(pops, dist, gens)]
    dist = distances()
    best = dist.argmin(dim=1)
    return [(pops[i][best[i]].tolist(), float(dist[i, best[i]])) for i in range(n)]


def allowed_tokens(components, concept: str, ban: bool) -> torch.Tensor:
    """Token ids [V'] the search may draw: the valid vocabulary, less the concept's own tokens when ``ban``."""
    vocab = valid_token_ids(components)
    if not ban:
        return vocab
    banned = set(components.tokenizer(concept, add_special_tokens=False).input_ids)
    return vocab[~torch.isin(vocab, torch.tensor(sorted(banned), dtype=torch.long))]


_MEMO: dict[tuple, tuple[list[int], float]] = {}
"""Found prompts by (reference, concept, seed, concept-vector prompts, budget, prompt): Ring-A-Bell never sees the
attacked model, so one search serves every model attacked in a process (an erasure matrix)."""


def run(ctx: AttackContext, cfg: RingABellConfig, prompts: list[AttackPrompt]) -> list[AttackOutput]:
    """Ring-A-Bell on every prompt, with the reference model's text encoder; outputs in the prompts' order. The
    concept vector uses ``ctx.all_prompts`` (the whole attack set), so a prompt's result ignores its chunk."""
    ref = ctx.reference
    base = ctx.all_prompts or prompts
    pairs = [tuple(p) for p in cfg.pairs] or [(p.prompt, without_concept(p.prompt, ctx.concept)) for p in base]
    if all(a == b for a, b in pairs):
        raise ConfigError(f"no prompt mentions {ctx.concept!r}: give ringabell.pairs (with / without the concept)")
    key = (ref.source, ctx.concept, ctx.seed, tuple(pairs), tuple(sorted(cfg.budget().items())), cfg.elite,
           cfg.ban_concept_tokens)
    todo = [p for p in prompts if (*key, p.id, p.prompt) not in _MEMO]
    if todo:
        vec = concept_vector(ref, pairs)
        vocab = allowed_tokens(ref, ctx.concept, cfg.ban_concept_tokens)
        with torch.no_grad():
            targets = encode_prompts(ref, [without_concept(p.prompt, ctx.concept) for p in todo]) + cfg.eta * vec
        found = search(ref, targets, vocab, cfg, [attack_generator(ctx.seed, p.id, "ringabell") for p in todo])
        _MEMO.update({(*key, p.id, p.prompt): f for p, f in zip(todo, found)})
    outs = []
    for p in prompts:
        ids, dist = _MEMO[(*key, p.id, p.prompt)]
        outs.append(AttackOutput(p.id, ref.tokenizer.decode(ids, skip_special_tokens=True).strip(), None, ids, dist))
    return outs
