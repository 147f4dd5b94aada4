"""``prunefit experiment distillation``: the fine-tuning objective ablation (config, run, report)."""
