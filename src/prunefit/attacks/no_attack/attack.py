"""The no-op attack: every prompt is its own adversarial prompt."""

from __future__ import annotations

from dataclasses import dataclass

from prunefit.attacks.base import AttackContext, AttackOutput, AttackPrompt


@dataclass
class NoAttackConfig:
    def budget(self) -> dict:
        """The attack's budget for the results: none."""
        return {}


def run(ctx: AttackContext, cfg: NoAttackConfig, prompts: list[AttackPrompt]) -> list[AttackOutput]:
    """The baseline: every prompt unchanged."""
    return [AttackOutput(p.id, p.prompt) for p in prompts]
