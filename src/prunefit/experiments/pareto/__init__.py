"""``prunefit experiment pareto``: ASR-vs-FJD fronts over seeds (config, run, report)."""
