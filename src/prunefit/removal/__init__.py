"""Concept-removal methods, one folder each, in a registry: edit methods change weights once (UCE,
ConceptPrune); train methods contribute a phase to the training loop (ESD, AdvUnlearn)."""
