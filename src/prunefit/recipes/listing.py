"""``prunefit list``: what is registered (removal methods, metrics, attacks, samplers, prompt-file formats)."""

from __future__ import annotations

from prunefit.attacks.registry import listing as attacks
from prunefit.data.prompts import listing as prompt_formats
from prunefit.evaluation.registry import listing as metrics
from prunefit.models.schedulers import listing as schedulers
from prunefit.removal.registry import listing as methods

LISTS = {"methods": methods, "metrics": metrics, "attacks": attacks, "schedulers": schedulers,
         "prompt-formats": prompt_formats}


def main(what: str) -> list[str]:
    """One line per registered ``what`` (a key of ``LISTS``), as its own module lists it."""
    return LISTS[what]()
