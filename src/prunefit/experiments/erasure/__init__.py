"""``prunefit experiment erasure``: every removal method on the dense teacher (config, run, report)."""
