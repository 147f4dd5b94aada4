"""``prunefit experiment distillation``: the paper's ablation of the fine-tuning objective (its Figs 4-5, §C.1.2).

An APTP expert of the toy teacher is fine-tuned with each loss variant for every seed; at every ``eval_every``
steps the student is judged on toy-val (FJD against ground-truth renders, prompt fidelity), so each variant
gives a curve. Variants (DDPM / output KD / feature KD weights): ddpm 1/0/0, output_kd 0/2/0, feature_kd
0/0/0.1, output+feature 0/2/0.1, all 1/2/0.1 (the paper's). Training continues from the previous evaluation
point's checkpoint (the schedule is a pure function of the step, so the chunks equal one run); every judged
point is kept, so a rerun resumes. Intervals: hierarchical bootstrap over seeds and prompts. Outputs:
distillation.json, report.md, curves.png.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from prunefit.config.load import save_resolved_config
from prunefit.config.schema import FinetuneConfig
from prunefit.experiments.common.judging import Judged
from prunefit.experiments.common.stages import pruned_once
from prunefit.experiments.distillation.config import VARIANTS, DistillationConfig
from prunefit.experiments.distillation.report import write_report
from prunefit.recipes import finetune
from prunefit.utils.io import mark_done


class Distillation:
    def __init__(self, cfg: DistillationConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.root = Path(cfg.output_dir)

    def student(self) -> Path:
        """The pruned student: ``expert`` when given, else the teacher APTP-pruned once (reused on reruns)."""
        if self.cfg.expert:
            return Path(self.cfg.expert)
        return pruned_once(self.root / "aptp", f"[distillation] APTP-pruning the teacher ({self.cfg.prune_steps} "
                           "router steps)", self.log, model=self.cfg.model, num_experts=4, target=0.8,
                           steps=self.cfg.prune_steps, batch_size=8, device=self.cfg.device)

    def point(self, variant: str, seed: int, step: int, judged) -> dict:
        """Fine-tune ``variant`` with ``seed`` up to ``step`` (resuming) and judge it; cached in the run's eval file."""
        c = self.cfg
        run = self.root / variant / f"seed-{seed}"
        efile = run / f"eval-{step}-{c.eval_prompts}.json"
        if efile.is_file():
            return json.loads(efile.read_text())
        ddpm, out_kd, feat_kd = VARIANTS[variant]
        cfg = FinetuneConfig(model=c.model, student=str(self.student()), output_dir=str(run), seed=seed,
                             device=c.device, data=c.data,
                             train=dataclasses.replace(c.train, max_steps=step, checkpoint_every=c.eval_every),
                             loss=dataclasses.replace(c.loss, ddpm=ddpm, output_kd=out_kd, feature_kd=feat_kd),
                             resume="latest" if (run / "checkpoints").is_dir() else None)
        self.log(f"[distillation] {variant}, seed {seed}: to step {step}")
        model = finetune.main(cfg).model_path
        res = {"variant": variant, "seed": seed, "step": step, **judged.measure_val(model)}
        mark_done(efile, res)  # the judged point: its presence gates reuse
        return res

    def run(self) -> dict:
        """Every variant, seed and evaluation step; writes the report and returns its summary."""
        torch.set_num_threads(self.cfg.threads)
        self.root.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.root)
        judged = Judged(self.cfg.model, "skull", self.cfg.eval_prompts)
        cells: dict[tuple[str, int], list[dict]] = {}
        for seed in self.cfg.seeds:
            for variant in self.cfg.variants:
                for step in self.cfg.eval_steps():
                    cells.setdefault((variant, step), []).append(self.point(variant, seed, step, judged))
        return write_report(self.root, self.cfg, cells, judged.ref_features)


def main(cfg: DistillationConfig, log=print) -> dict:
    """Run the distillation experiment; returns the report summary."""
    return Distillation(cfg, log).run()

