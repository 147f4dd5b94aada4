"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024;
github.com/rohitgandikota/unified-concept-editing). A closed-form edit of every cross-attention to_k / to_v."""

from prunefit.removal.entry import MethodEntry
from prunefit.removal.uce.method import UCEConfig, apply, uce_closed_form  # noqa: F401

ENTRY = MethodEntry("uce", "edit", UCEConfig, "closed-form cross-attention K/V edit with a preserve set",
                    "Gandikota et al. 2024, github.com/rohitgandikota/unified-concept-editing", apply=apply)
