"""prunefit: prune Stable Diffusion into efficient experts, distil them, and suppress concepts."""

__version__ = "0.1.0"
