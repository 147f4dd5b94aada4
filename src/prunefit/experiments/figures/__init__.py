"""``prunefit experiment figures``: models side by side on the same prompts (config, run, report)."""
