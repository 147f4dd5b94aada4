"""Keep third-party info/warning chatter (tokenizers' fork warning, deprecations, library logs) off the terminal."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    """Turn tokenizers' parallelism off (before it is imported), ignore FutureWarnings, and set diffusers' and
    transformers' logging to errors only."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("diffusers", "transformers"):
        try:
            lib = __import__(name, fromlist=["logging"])
            lib.utils.logging.set_verbosity_error()
        except Exception:  # pragma: no cover - a missing library reports itself later
            pass
