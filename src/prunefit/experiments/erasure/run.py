"""``prunefit experiment erasure``: every removal method on the dense teacher, one concept at a time.

The acceptance matrix of the concept-removal methods: for each concept (an artist "to erase" and the unsafe
concept) the original teacher and each method variant (ESD-x, ESD-u, UCE, ConceptPrune, AdvUnlearn) are
judged on the concept's plain prompts, its adversarial prompts (unsafe concept), the kept artists' prompts
and toy-val (fidelity, FJD), with the wall time of the edit, and attacked (``attacks``: UnlearnDiffAtk and
Ring-A-Bell by default) for its ASR under attack. Finished cells are reused on re-runs
(``<output>/<concept>/<variant>/cell.json``). Writes ``report.md`` (the table and the targets met or
missed) and ``results.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch

from prunefit.config.load import save_resolved_config
from prunefit.experiments.common.attacks import add_attacks
from prunefit.experiments.common.judging import judge_model
from prunefit.experiments.common.stages import concept_slug, run_erase
from prunefit.experiments.erasure.config import ErasureConfig, variant_method
from prunefit.experiments.erasure.report import write_report
from prunefit.utils.io import atomic_write_text, mark_done, read_jsonl


def attack_cells(cell: dict, cfg: ErasureConfig, concept: str, folder: Path, log=print) -> bool:
    """Add the missing "ASR under attack" entries to a judged cell (``cell['attacks'][name]``); True if any."""
    def prepare(a: str, i: int, todo: list[str]) -> None:
        """Seed attack ``a``'s image folder with images it can reuse (an earlier attack's, the original's)."""
        reuse_images(folder / f"attack-{a}", folder / f"attack-{todo[0]}" if i else None,
                     folder.parent / "original" / f"attack-{cfg.attacks[0]}")

    return add_attacks(cell, model=cell["model"], base_model=cfg.model, concept=concept, attacks=cfg.attacks,
                       budgets=cfg.attack_budgets, n_prompts=cfg.attack_prompts, seed=cfg.seed, folder=folder,
                       device=cfg.device, log=log, prepare=prepare)


def reuse_images(dst: Path, same_model: Optional[Path], original: Path) -> None:
    """Seed a new attack folder with what does not depend on the attack: the plain-prompt judgements and images of
    the same model (``same_model``, another attack's folder) and, as the attack's targets, the original teacher's
    plain-prompt images (``original``: an attack folder of the original row, whose model is the reference). Same
    prompts, seeds and sampler, so these are the files the attack run would write itself."""
    if (dst / "protocol.json").is_file():
        return
    import shutil

    (dst / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for src, kind in ((same_model, "pre"), (original, "ref")):
        if src is None or src.resolve() == dst.resolve() or not (src / "manifest.jsonl").is_file():
            continue
        for row in read_jsonl(src / "manifest.jsonl"):
            if row.get("kind") != "pre" or not (src / "images" / f"{row['id']}.png").is_file():
                continue
            new_id = f"{row['source_id']}-{kind}"
            shutil.copy2(src / "images" / f"{row['id']}.png", dst / "images" / f"{new_id}.png")
            rows.append(json.dumps({**row, "id": new_id, "kind": kind}))
        if kind == "pre" and (src / "pre.jsonl").is_file():
            shutil.copy2(src / "pre.jsonl", dst / "pre.jsonl")
    if rows:
        atomic_write_text(dst / "manifest.jsonl", "\n".join(rows) + "\n")


def _write_cell(cfile: Path, cell: dict) -> None:
    mark_done(cfile, cell, indent=1)  # a judged cell: its presence gates reuse


def main(cfg: ErasureConfig, log=print) -> dict:
    """Run the erasure experiment: every concept's original and variants, edited, judged and attacked (cells cached);
    writes the report and returns the results by concept and variant."""
    torch.set_num_threads(cfg.threads)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, root)
    results: dict = {}
    for concept in cfg.concepts:
        croot = root / concept_slug(concept)
        cells: dict = {}
        for variant in ["original", *cfg.variants]:
            cfile = croot / variant / "cell.json"
            if cfile.is_file():
                cells[variant] = json.loads(cfile.read_text())
                if attack_cells(cells[variant], cfg, concept, cfile.parent, log):
                    _write_cell(cfile, cells[variant])
                continue
            log(f"[erasure] {concept}: {variant}")
            t0 = time.time()
            if variant == "original":
                model_path, seconds = cfg.model, 0.0
            else:
                method, params = variant_method(variant)
                model_path = run_erase(method, concept, cfg.model, None, croot / variant, cfg.knobs(), cfg.seed,
                                       cfg.device, train_method=params)
                seconds = time.time() - t0
            metrics = judge_model(model_path, cfg.model, concept, cfg.eval_prompts, cfg.kept_artists, cfg.device)
            cells[variant] = {"model": str(model_path), "seconds": round(seconds, 1), **metrics}
            _write_cell(cfile, cells[variant])
            if attack_cells(cells[variant], cfg, concept, cfile.parent, log):
                _write_cell(cfile, cells[variant])
        results[concept] = cells
    (root / "results.json").write_text(json.dumps(
        {c: {v: {k: x for k, x in cell.items() if k != "sets"} for v, cell in cells.items()}
         for c, cells in results.items()}, indent=1))
    write_report(root, cfg, results)
    return results

