"""The embedded toy world: renderer, caption grammar, prompt sets, judge, teacher build and metrics."""
