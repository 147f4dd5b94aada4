"""Define the errors prunefit raises for bad input (each one line, saying what to fix)."""

from __future__ import annotations


class PrunefitError(Exception):
    """Bad input or environment. The CLI prints the message on one line and exits with code 2."""

    exit_code = 2


class ConfigError(PrunefitError):
    """A config file, key or value is wrong."""


def require(cond: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``cond``: the one-line checks of the config dataclasses."""
    if not cond:
        raise ConfigError(message)


class ModelLoadError(PrunefitError):
    """A model could not be found or is not what was expected."""


class DataError(PrunefitError):
    """An input file (prompts, images, manifests) is missing or malformed."""


class OutputError(PrunefitError):
    """An output folder cannot be written, or writing would overwrite an earlier result."""
