"""The embedded toy world: renderer, caption grammar, prompt sets, judge, toy metrics and shipped assets.

Building, measuring, showing and the model card are recipes (``prunefit.recipes.toyworld_*``)."""
