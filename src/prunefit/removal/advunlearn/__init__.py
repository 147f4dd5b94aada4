"""AdvUnlearn: Defensive Unlearning with Adversarial Training for Robust Concept Erasure (Zhang et al.,
NeurIPS 2024; github.com/OPTML-Group/AdvUnlearn). An inner attack on the prompt, an outer ESD-style
unlearning step on the attacked prompt plus a retain loss; the UNet or the text encoder as the target."""

from prunefit.removal.advunlearn.method import AdvUnlearnConfig, build_phase  # noqa: F401
from prunefit.removal.entry import MethodEntry

ENTRY = MethodEntry("advunlearn", "train", AdvUnlearnConfig,
                    "adversarial (prompt-attack) unlearning with a retain loss",
                    "Zhang et al. 2024, github.com/OPTML-Group/AdvUnlearn", build_phase=build_phase,
                    trained_module=lambda cfg: cfg.target, check=AdvUnlearnConfig.check_retain)
