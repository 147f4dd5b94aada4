"""ConceptPrune: Concept Editing in Diffusion Models via Skilled Neuron Pruning (Chavhan et al., 2024;
github.com/ruchikachavhan/concept-prune). WANDA-scored skilled weights of the FFN output layers."""

from prunefit.removal.concept_prune.method import ConceptPruneConfig, apply, skilled_mask, union_over_steps  # noqa: F401
from prunefit.removal.entry import MethodEntry

ENTRY = MethodEntry("concept_prune", "edit", ConceptPruneConfig,
                    "zero WANDA-scored skilled weights of FFN output layers (skill ratio 0.01)",
                    "Chavhan et al. 2024, github.com/ruchikachavhan/concept-prune", apply=apply)
