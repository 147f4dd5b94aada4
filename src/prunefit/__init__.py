"""prunefit: prune Stable Diffusion into efficient experts, distil them, and suppress concepts.

The Python API (``prunefit.api``) mirrors the CLI: ``load``, ``prune``, ``finetune``, ``erase``, ``bilevel``,
``generate`` and ``evaluate``, each with keyword settings and a named result.
"""

__version__ = "0.1.0"

from prunefit.api import bilevel, erase, evaluate, finetune, generate, load, prune  # noqa: E402

__all__ = ["bilevel", "erase", "evaluate", "finetune", "generate", "load", "prune"]
