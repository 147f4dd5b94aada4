"""P4D: Prompting4Debugging, red-teaming text-to-image diffusion models by finding problematic prompts (Chin et al.,
ICML 2024; github.com/joycenerd/P4D). White-box discrete prompt tokens that make the erased model predict the noise
the unerased model predicts for the concept prompt; P4D-N (n tokens) and P4D-K (a token every k words)."""

from prunefit.attacks.base import AttackEntry
from prunefit.attacks.p4d.attack import P4DConfig, run

ENTRY = AttackEntry("p4d", "white-box", P4DConfig,
                    "discrete tokens matching the unerased model's noise prediction (P4D-N / P4D-K)",
                    "Chin et al. 2024, github.com/joycenerd/P4D", run)
