"""The attack registry: ``register_attack(AttackEntry(...))``, ``get_attack(name)``, ``list_attacks()``.

An attack is a folder with a config dataclass (validated once, with a ``budget()`` summary for the protocol)
and ``run(ctx, cfg, prompts) -> list[AttackOutput]``: the optimization only; rendering and judging belong to
the caller. Adding an attack = a folder with its ``ENTRY`` + its name in ``_load_builtin`` + a config section in
``recipes/attack.py``. A plug-in package declares an entry point in the group ``prunefit.attacks`` naming its
``AttackEntry`` (or a callable that calls ``register_attack``); it is loaded after the built-ins. The folders
never import this registry (it imports them), so there is no import cycle.
"""

from __future__ import annotations

from prunefit.attacks.base import KINDS, AttackEntry  # noqa: F401  (re-exported)
from prunefit.utils.registry import Registry


def _load_builtin() -> None:
    from prunefit.attacks import no_attack, p4d, ringabell, unlearndiff

    for folder in (no_attack, p4d, ringabell, unlearndiff):
        register_attack(folder.ENTRY)


_ATTACKS: Registry[AttackEntry] = Registry("attack", _load_builtin, group="prunefit.attacks", entry_type=AttackEntry)


def register_attack(entry: AttackEntry) -> None:
    """Add an attack to the registry under its name."""
    _ATTACKS.register(entry.name, entry)


def get_attack(name: str) -> AttackEntry:
    """The registered attack ``name`` (an error lists the available ones)."""
    return _ATTACKS.get(name)


def list_attacks() -> list[AttackEntry]:
    """All registered attacks."""
    return _ATTACKS.all()


def listing() -> list[str]:
    """``prunefit list attacks``: one line per attack (name, kind, summary, reference)."""
    return [f"{a.name:12s} [{a.kind}] {a.summary}  ({a.reference})" for a in list_attacks()]


def attack_sections() -> list[tuple[str, type]]:
    """``(name, config class)`` of every registered attack: the sections of ``prunefit attack``'s config."""
    return [(a.name, a.config_cls) for a in list_attacks()]
