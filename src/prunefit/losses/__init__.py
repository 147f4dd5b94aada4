"""Turn tensors into scalar losses: pure functions with shapes documented; no model is called here."""
