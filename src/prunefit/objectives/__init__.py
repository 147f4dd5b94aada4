"""Turn a batch of samples into a named loss: models are called here, optimizers are not."""
