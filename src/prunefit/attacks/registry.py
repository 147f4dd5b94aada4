"""The attack registry: ``register_attack(AttackEntry(...))``, ``get_attack(name)``, ``list_attacks()``.

An attack is a folder with a config dataclass (validated once, with a ``budget()`` summary for the protocol)
and ``run(ctx, cfg, prompts) -> list[AttackOutput]``: the optimization only; rendering and judging belong to
the caller. Adding an attack = a folder + one register call + a config section in ``recipes/attack.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prunefit.utils.registry import Registry

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


def _load_builtin() -> None:
    from prunefit.attacks import no_attack, p4d, ringabell, unlearndiff  # noqa: F401  (each registers itself)


_ATTACKS: Registry[AttackEntry] = Registry("attack", _load_builtin)


def register_attack(entry: AttackEntry) -> None:
    _ATTACKS.register(entry.name, entry)


def get_attack(name: str) -> AttackEntry:
    return _ATTACKS.get(name)


def list_attacks() -> list[AttackEntry]:
    return _ATTACKS.all()
