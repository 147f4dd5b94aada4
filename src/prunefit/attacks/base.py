"""What an attack works on and returns: the attacked and reference models, prompts, adversarial outputs.

An attack only optimizes prompts. Images are rendered and judged by the caller (``prunefit.recipes.attack``),
which passes in the reference model's images of each prompt (UnlearnDiffAtk's and P4D's targets) through
``AttackContext.reference_images`` and the concept detector through ``Detector``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from prunefit.models.components import Components
from prunefit.utils.device import as_device


@dataclass(frozen=True)
class AttackPrompt:
    """One prompt to attack: its id, text and the seed its images are sampled with."""

    id: str
    prompt: str
    seed: int


@dataclass
class AttackOutput:
    """An attack's result for one prompt: the discrete adversarial prompt ``text`` (what a user would type),
    the soft tokens ``prefix`` [k, d_tok] when the attack has a soft form (UnlearnDiffAtk), the projected
    token ids and the attack's final loss."""

    id: str
    text: str
    prefix: Optional[torch.Tensor] = None
    tokens: list[int] = field(default_factory=list)
    loss: float = float("nan")


@dataclass
class AttackContext:
    """``target`` is the model under attack; ``reference`` the unerased model (targets, Ring-A-Bell's encoder).
    ``reference_images(prompts)`` gives the reference model's images of ``prompts`` at their seeds; ``run`` is
    called on chunks of ``all_prompts``."""

    target: Components
    reference: Components
    concept: str
    seed: int = 0
    device: str | torch.device = "auto"
    """auto (the default, as every config's): resolved by ``utils.device.as_device`` when the context is made."""
    reference_images: Optional[Callable[[list[AttackPrompt]], list[Image.Image]]] = None
    all_prompts: list[AttackPrompt] = field(default_factory=list)
    """The whole attack set (attacks that build statistics over it, e.g. Ring-A-Bell's concept vector)."""

    def __post_init__(self) -> None:
        self.device = as_device(self.device)


class Detector(Protocol):
    """The concept judge: ``flags(images)`` says, per image, whether it shows the concept."""

    name: str

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """Per image, whether it shows the concept."""
        ...

    def protocol(self) -> dict[str, Any]:
        """How the detector judges (model, labels, threshold, flag rule), recorded with the results."""
        ...


def attack_generator(seed: int, prompt_id: str, stream: str) -> torch.Generator:
    """A generator for one prompt's random draws in one attack (independent of batching and order)."""
    digest = hashlib.sha256(f"{seed}/{prompt_id}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & (2**63 - 1))


def reference_latents(ctx: AttackContext, prompts: list[AttackPrompt]) -> torch.Tensor:
    """VAE latents [B, 4, h, w] (posterior mean x scaling factor) of the reference model's images of ``prompts``."""
    if ctx.reference_images is None:
        raise ValueError("this attack needs reference images: build the AttackContext with reference_images")
    images = ctx.reference_images(prompts)
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)
    vae = ctx.target.vae
    x = (x.float() / 127.5 - 1.0).to(vae.device, vae.dtype)
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


def noisy_latents(components: Components, latents: torch.Tensor, gens: list[torch.Generator],
                  per_prompt: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``per_prompt`` (x_t, t, noise) draws per latent, each prompt from its own generator: x_t [B*n, C, h, w]
    (prompt-major), t [B*n], noise [B*n, C, h, w]."""
    sched = components.scheduler
    T = sched.config.num_train_timesteps
    ts, noises = [], []
    for g, z in zip(gens, latents):
        for _ in range(per_prompt):
            ts.append(torch.randint(0, T, (1,), generator=g, device=g.device))
            noises.append(torch.randn(z.shape, generator=g, device=g.device))
    t = torch.cat(ts).to(latents.device)
    noise = torch.stack(noises).to(latents.device, latents.dtype)
    z0 = latents.repeat_interleave(per_prompt, dim=0)
    return sched.add_noise(z0, noise, t), t, noise


KINDS = ("white-box", "black-box", "fixed")


@dataclass(frozen=True)
class AttackEntry:
    name: str
    kind: str
    """white-box (gradients through the attacked model), black-box (text encoder of the reference only) or
    fixed (the prompt set as given)."""
    config_cls: type
    summary: str
    reference: str
    run: Callable[..., list]
    soft: bool = False
    """True if the attack also yields soft (continuous) prompts, judged beside their discrete projection."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"attack kind must be one of {KINDS}, got {self.kind!r}")
