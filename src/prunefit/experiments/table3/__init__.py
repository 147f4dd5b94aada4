"""``prunefit experiment table3``: the paper's Table 3 (config, run, report)."""
