"""The fixed prompt set as it stands: no optimization (the pre-attack baseline, and ASR on a fixed adversarial set)."""

from prunefit.attacks.base import AttackEntry
from prunefit.attacks.no_attack.attack import NoAttackConfig, run

ENTRY = AttackEntry("none", "fixed", NoAttackConfig, "the prompt set as given (no optimization)",
                    "the fixed prompt files (I2P, MMA, Ring-A-Bell, P4D, UnlearnDiffAtk sets)", run)
