"""The one training loop over phases, its runtime (accelerate) and checkpoints."""
