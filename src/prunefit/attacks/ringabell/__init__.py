"""Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models? (Tsai et al., ICLR 2024;
github.com/chiayi-hsu/Ring-A-Bell). Black-box: a concept vector from the reference text encoder, added to neutral
prompts, and a genetic search for discrete prompts whose embeddings come near the result."""

from prunefit.attacks.base import AttackEntry
from prunefit.attacks.ringabell.attack import RingABellConfig, run

ENTRY = AttackEntry("ringabell", "black-box", RingABellConfig,
                    "concept vector + genetic search over discrete prompts (text encoder only)",
                    "Tsai et al. 2024, github.com/chiayi-hsu/Ring-A-Bell", run)
