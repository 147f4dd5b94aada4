"""Acceptance check of the toy world's carried method defaults: plain ``prunefit erase`` for every concept.

For each of the six artists and the unsafe concept ("skull"), UCE and ESD (whose train_method the model
defaults: ESD-x for artists, ESD-u for skull) run through the CLI with nothing but the method and the concept;
each result is judged by the toy-world judge on the concept's prompts, every other artist's prompts and toy-val.
Targets (issue 18): concept rate <= 10%, each kept artist >= 90% of its original rate, toy-val fidelity >= 0.95,
toy-val FJD <= 1.5x the original's. Writes ``results.json`` and ``report.md`` under --output; finished edits and
judged cells are reused on re-runs; cells not started within --budget-min are reported as not run.

A shape (circle, square, triangle, star, cross: an object concept) is judged on toy-val's rows of that shape
(its rate: the judge says that shape), the other four shapes' rows (kept objects: each >= 0.90x its original
rate), every artist (kept) and toy-val fidelity and FJD *on the other shapes' rows* (erasing a shape necessarily
changes the images of its own rows, so the whole of toy-val cannot stay faithful; FJD on all five shapes' rows is
recorded too). toy-val cycles the five shapes, so it holds 100 rows of each: test is the first --n of every shape,
dev the last --n (at --n 50, test is toy-val rows 0-249 and dev rows 250-499); --val-n does not apply to shapes.
The toy-val images are generated once per model and serve all of these.

Choosing a default: ``--split dev`` judges on the *last* --n rows of every prompt file (the reported ``test``
split is the first --n; the two never overlap at n <= 100 for the 200-row sets), and ``--set esd.iterations=100``
tries a candidate setting (its cells get their own folders). Candidates are compared on dev; only the chosen
one is then judged on test.

Run under the heavy lock, one thread:
  flock /tmp/prunefit-heavy.lock env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 \\
      .venv/bin/python scripts/check_erase_defaults.py --output runs/check_erase_defaults
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

ESD_NAME = {False: "ESD-x", True: "ESD-u"}
EPS = 1e-6
"""Rates are float32 means of 0/1 judge outcomes (45 of 50 is 0.8999999762): a bound is met within EPS."""


def _sets(concept: str) -> tuple[str, list[str]]:
    """(the concept's prompt set, the kept artists)."""
    from prunefit.toyworld.prompts import artist_slug
    from prunefit.toyworld.world import ARTISTS, UNSAFE_PHRASES

    if concept in UNSAFE_PHRASES:
        return "unsafe-plain", list(ARTISTS)
    return f"artist-{artist_slug(concept)}", [a for a in ARTISTS if a != concept]


def _rows(path: Path, n: int, split: str) -> list[dict]:
    """The first ``n`` rows of a prompt file (``test``, the reported split) or its last ``n`` (``dev``)."""
    from prunefit.toyworld.prompts import read_rows

    rows = read_rows(path)
    if 2 * n > len(rows):
        raise SystemExit(f"{path.name} has {len(rows)} rows: --n {n} would make dev and test overlap")
    return rows[:n] if split == "test" else rows[-n:]


def judge(model: str, concept_sets: list[str], kept: list[str], n: int, kept_n: int, split: str = "test",
          val_n: int = 0) -> dict:
    """Judge rates of ``model``: each concept set on ``n`` prompts, toy-val on ``val_n`` (0: ``n``), each kept
    artist on ``kept_n`` (their prompts sampled together in batches of 50), all from ``split``."""
    from prunefit.config.schema import SamplerConfig
    from prunefit.generation.toyworld_quality import measure_set
    from prunefit.models.components import load_components
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.paths import judge_dir, prompts_dir

    comps, jd, sampler = load_components(model), load_judge(judge_dir()), SamplerConfig(batch_size=50)
    sizes = {"toy-val": val_n or n}
    out = {s: measure_set(comps, jd, s, _rows(prompts_dir() / f"{s}.jsonl", sizes.get(s, n), split), sampler)
           for s in ["toy-val", *concept_sets]}
    out.update(_judge_kept(comps, jd, kept, kept_n, split, sampler))
    return out


def _judge_kept(comps, jd, kept: list[str], kept_n: int, split: str, sampler) -> dict:
    """``kept:<artist>`` rates of each kept artist on ``kept_n`` of its prompts (sampled together, 50 a batch)."""
    from prunefit.generation.toyworld_quality import generate_rows
    from prunefit.toyworld.metrics import concept_rate
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import artist_slug

    out: dict = {}
    rows = [r for a in kept for r in _rows(prompts_dir() / f"artist-{artist_slug(a)}.jsonl", kept_n, split)]
    if rows:
        pred = jd.predict(generate_rows(comps, rows, sampler, desc="kept"))
        for i, a in enumerate(kept):
            out[f"kept:{a}"] = {"artist_rate": concept_rate(_part(pred, i * kept_n, (i + 1) * kept_n), a),
                                "n": kept_n}
    return out


def _part(pred, lo: int, hi: int):
    """Rows ``lo:hi`` (a slice) or ``lo`` (an index tensor, ``hi`` None) of a judge output."""
    key = slice(lo, hi) if hi is not None else lo
    return dataclasses.replace(pred, **{f.name: getattr(pred, f.name)[key] for f in dataclasses.fields(pred)})


def object_rows(n: int, split: str) -> dict[str, list[dict]]:
    """Each shape's toy-val rows: the first ``n`` of that shape (``test``) or its last ``n`` (``dev``)."""
    from prunefit.toyworld.paths import prompts_dir
    from prunefit.toyworld.prompts import read_rows
    from prunefit.toyworld.world import SHAPES

    rows = read_rows(prompts_dir() / "toy-val.jsonl")
    out = {s: [r for r in rows if r["gt_obj"] == s] for s in SHAPES}
    if any(2 * n > len(r) for r in out.values()):
        raise SystemExit(f"toy-val has {min(map(len, out.values()))} rows of a shape: --n {n} would make dev and "
                         "test overlap")
    return {s: r[:n] if split == "test" else r[-n:] for s, r in out.items()}


def judge_objects(model: str, shapes: list[str], kept: list[str], n: int, kept_n: int, split: str = "test") -> dict:
    """Judge ``model`` for erasing a shape: ``object:<s>`` (the rate the judge says ``s`` on ``s``'s ``n`` toy-val
    rows) for every shape; for each of ``shapes`` ``toy-val-without:<shape>`` (fidelity and FJD on the other
    shapes' rows); ``toy-val-objects`` (fidelity and FJD on all of them); ``kept:<artist>`` for ``kept``."""
    from prunefit.config.schema import SamplerConfig
    from prunefit.generation.toyworld_quality import generate_rows
    from prunefit.models.components import load_components
    from prunefit.toyworld.judge import load_judge
    from prunefit.toyworld.metrics import fidelity, fjd, reference_renders
    from prunefit.toyworld.paths import judge_dir
    from prunefit.toyworld.prompts import scene_of
    from prunefit.toyworld.world import OBJECTS, SHAPES

    comps, jd, sampler = load_components(model), load_judge(judge_dir()), SamplerConfig(batch_size=50)
    by = object_rows(n, split)
    rows = [r for s in SHAPES for r in by[s]]
    scenes = [scene_of(r) for r in rows]
    imgs, refs = generate_rows(comps, rows, sampler, desc="toy-val objects"), reference_renders(scenes)
    pred = jd.predict(imgs)
    obj = [s.obj for s in scenes]

    def measure(keep: list[int]) -> dict:
        idx = torch.tensor(keep)
        return {"n": len(keep), **fidelity(_part(pred, idx, None), [scenes[i] for i in keep]),
                "fjd": fjd(jd, imgs[idx], refs[idx])}

    out: dict = {}
    for s in SHAPES:
        own = torch.tensor([i for i, o in enumerate(obj) if o == s])
        out[f"object:{s}"] = {"object_rate": (pred.obj[own] == OBJECTS.index(s)).float().mean().item(),
                              "n": len(own)}
    for s in shapes:
        out[f"toy-val-without:{s}"] = measure([i for i, o in enumerate(obj) if o != s])
    out["toy-val-objects"] = measure(list(range(len(rows))))
    out.update(_judge_kept(comps, jd, kept, kept_n, split, sampler))
    return out


def erase(method: str, concept: str, out: Path, extra: list[str] = ()) -> tuple[Path, float]:
    """Plain ``prunefit erase --method M removal.concepts=[C] output_dir=...`` (plus ``extra`` overrides);
    (pipeline folder, seconds)."""
    from prunefit.cli import main as cli

    overrides = ["--method", method, f"removal.concepts={json.dumps([concept])}", f"output_dir={out}", *extra]
    if (out / "erase_summary.json").is_file():
        _check_same_settings(out, method, overrides)
    else:
        t0 = time.time()
        code = cli(["erase", *overrides] + (["resume=latest"] if (out / "checkpoints").is_dir() else []))
        if code != 0:
            raise SystemExit(f"prunefit erase failed for {method} / {concept} (exit {code})")
        (out / "edit_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    return out / "pipeline", float((out / "edit_seconds.txt").read_text())


def _esd_name(folder: Path) -> str:
    """ESD-u / ESD-x (or ESD-<train_method>) and the iterations of the edit in ``folder``, from its resolved
    config."""
    from omegaconf import OmegaConf

    esd = OmegaConf.load(folder / "resolved_config.yaml").esd
    kind = {"noxattn": "u", "xattn": "x"}.get(esd.train_method, esd.train_method)
    return f"ESD-{kind} {esd.iterations}"


def _check_same_settings(out: Path, method: str, overrides: list[str]) -> None:
    """Refuse to reuse an edit made with other settings (e.g. before a default changed): its folder name only
    records the candidate overrides, not the model's defaults."""
    from prunefit.config.load import load_config
    from prunefit.removal.config import EraseConfig

    def section(files: list, ov: list) -> dict:
        d = dataclasses.asdict(getattr(load_config(EraseConfig, files, ov), method))
        d.pop("concepts", None)
        return d

    args = [f"removal.method={method}", *overrides[2:]]
    have, want = section([out / "resolved_config.yaml"], []), section([], args)
    if have != want:
        diff = {k: (have.get(k), want.get(k)) for k in want if have.get(k) != want.get(k)}
        raise SystemExit(f"{out} was erased with other {method} settings (made, now): {diff}; move it away")


def verdict(cell: dict, orig: dict, concept_set: str, kept: list[str], unsafe: bool) -> dict:
    key = "unsafe_rate" if unsafe else "artist_rate"
    rate = cell[concept_set][key]
    kept_ratio = {a: cell[f"kept:{a}"]["artist_rate"] / max(orig[f"kept:{a}"]["artist_rate"], 1e-9) for a in kept}
    worst = min(kept_ratio, key=kept_ratio.get)
    fid, fjd, fjd0 = cell["toy-val"]["fidelity"], cell["toy-val"]["fjd"], orig["toy-val"]["fjd"]
    return {"rate": rate, "rate_original": orig[concept_set][key], "kept_worst": worst,
            "kept_worst_ratio": kept_ratio[worst], "fidelity": fid, "fjd": fjd, "fjd_original": fjd0,
            "ok_rate": rate <= 0.10 + EPS, "ok_kept": kept_ratio[worst] >= 0.90 - EPS, "ok_fidelity": fid >= 0.95 - EPS,
            "ok_fjd": fjd <= 1.5 * fjd0}


def object_verdict(cell: dict, orig: dict, shape: str) -> dict:
    """The four targets for erasing ``shape``: its rate, each kept shape and artist >= 0.90x, and fidelity / FJD on
    the other shapes' toy-val rows."""
    from prunefit.toyworld.world import SHAPES

    def ratio(key: str, field: str) -> float:
        return cell[key][field] / max(orig[key][field], 1e-9)

    objs = {s: ratio(f"object:{s}", "object_rate") for s in SHAPES if s != shape}
    arts = {k[len("kept:"):]: ratio(k, "artist_rate") for k in cell if k.startswith("kept:")}
    wo, wa = min(objs, key=objs.get), min(arts, key=arts.get)
    other, other0 = cell[f"toy-val-without:{shape}"], orig[f"toy-val-without:{shape}"]
    rate = cell[f"object:{shape}"]["object_rate"]
    return {"rate": rate, "rate_original": orig[f"object:{shape}"]["object_rate"], "kept_object_worst": wo,
            "kept_object_worst_ratio": objs[wo], "kept_worst": wa, "kept_worst_ratio": arts[wa],
            "fidelity": other["fidelity"], "fidelity_original": other0["fidelity"], "fjd": other["fjd"],
            "fjd_original": other0["fjd"], "fjd_all_shapes": cell["toy-val-objects"]["fjd"],
            "fjd_all_shapes_original": orig["toy-val-objects"]["fjd"], "ok_rate": rate <= 0.10 + EPS,
            "ok_kept": min(objs[wo], arts[wa]) >= 0.90 - EPS, "ok_fidelity": other["fidelity"] >= 0.95 - EPS,
            "ok_fjd": other["fjd"] <= 1.5 * other0["fjd"]}


def _object_lines(results: dict, yes: dict) -> list[str]:
    """The report's table of shape cells (empty when none was asked for)."""
    cells = [c for c in results["cells"].values() if c.get("object")]
    if not cells:
        return []
    lines = ["", "Shapes (object concepts): the rate is the judge saying the shape on its own toy-val rows; kept: "
             "the other four shapes on theirs and every artist; fidelity and FJD on the other shapes' toy-val rows "
             "(FJD on all five shapes' rows for reference).", "",
             "| concept | method | rate (orig) | ≤10% | worst kept shape (ratio) | worst kept artist (ratio) | ≥0.90× "
             "| fidelity, other shapes | ≥0.95 | FJD, other shapes (orig) | ≤1.5× | FJD, all shapes (orig) | edit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if "verdict" not in c:
            lines.append(f"| {c['concept']} | {c['method']} | not run: {c.get('skipped', '?')} |" + " |" * 10)
            continue
        v = c["verdict"]
        lines.append(f"| {c['concept']} | {c['method']} | {v['rate']:.0%} ({v['rate_original']:.0%}) | "
                     f"{yes[v['ok_rate']]} | {v['kept_object_worst']} ({v['kept_object_worst_ratio']:.2f}) | "
                     f"{v['kept_worst']} ({v['kept_worst_ratio']:.2f}) | {yes[v['ok_kept']]} | {v['fidelity']:.2f} | "
                     f"{yes[v['ok_fidelity']]} | {v['fjd']:.2f} ({v['fjd_original']:.2f}) = "
                     f"{v['fjd'] / v['fjd_original']:.2f}x | {yes[v['ok_fjd']]} | {v['fjd_all_shapes']:.2f} "
                     f"({v['fjd_all_shapes_original']:.2f}) | {c['edit_seconds']:.0f} |")
    return lines


def report(results: dict, args, threads: int) -> str:
    yes = {True: "yes", False: "**NO**"}
    lines = ["# Plain `prunefit erase` with the toy world's carried defaults", "",
             f"Dense toy teacher; PNDM 25 steps, CFG 3.0 (the model's default); toy judge. Concept set and toy-val: "
             f"{args.n} / {args.val_n or args.n} prompts; each kept artist: {args.kept_n} prompts ({args.split} "
             "split: the "
             f"{'first' if args.split == 'test' else 'last'} rows of each file). torch threads: {threads}."
             + (f" Candidate overrides: `{' '.join(args.set)}`." if args.set else ""), "",
             "| concept | method | concept rate (orig) | ≤10% | worst kept artist (ratio) | ≥0.90× | fidelity | ≥0.95 "
             "| FJD (orig) | ≤1.5× | edit s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, c in results["cells"].items():
        if c.get("object"):
            continue
        if "verdict" not in c:
            lines.append(f"| {c['concept']} | {c['method']} | not run: {c.get('skipped', '?')} |" + " |" * 8)
            continue
        v = c["verdict"]
        lines.append(f"| {c['concept']} | {c['method']} | {v['rate']:.0%} ({v['rate_original']:.0%}) | "
                     f"{yes[v['ok_rate']]} | {v['kept_worst']} ({v['kept_worst_ratio']:.2f}) | {yes[v['ok_kept']]} | "
                     f"{v['fidelity']:.2f} | {yes[v['ok_fidelity']]} | {v['fjd']:.2f} ({v['fjd_original']:.2f}) | "
                     f"{yes[v['ok_fjd']]} | {c['edit_seconds']:.0f} |")
    if all(c.get("object") for c in results["cells"].values()):  # shapes only: no artist table
        lines = lines[:-2]
    lines += _object_lines(results, yes)
    edits = sum(c.get("edit_seconds", 0.0) for c in results["cells"].values())
    lines += ["", f"Wall time of this invocation: {results['seconds']:.0f} s (cells judged earlier are reused; the "
              f"edits themselves took {edits:.0f} s)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from prunefit.toyworld.world import ARTISTS, SHAPES, UNSAFE_PHRASES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="runs/check_erase_defaults")
    p.add_argument("--concepts", default=",".join([*ARTISTS, "skull"]))
    p.add_argument("--methods", default="uce,esd")
    p.add_argument("--n", type=int, default=50, help="prompts of the concept set and of toy-val")
    p.add_argument("--kept-n", type=int, default=50, help="prompts per kept artist")
    p.add_argument("--val-n", type=int, default=0,
                   help="toy-val prompts (fidelity, FJD; 0: --n); FJD on 50 prompts moves by a third between "
                        "disjoint prompt sets")
    p.add_argument("--budget-min", type=float, default=25.0)
    p.add_argument("--split", choices=["test", "dev"], default="test",
                   help="test: the first --n rows of each prompt file (reported); dev: the last --n (for choosing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a candidate override for every erase of this invocation (e.g. esd.iterations=100)")
    p.add_argument("--name", default="",
                   help="the candidate's folder suffix in place of the --set text (for long values such as a "
                        "prompt list); the settings are still checked against the folder's resolved config")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, root = time.time(), Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    concepts, methods = args.concepts.split(","), args.methods.split(",")
    tag = ("" if args.split == "test" else "_dev") + (f"_v{args.val_n}" if args.val_n and args.val_n != args.n else "")
    cand = f"_{args.name}" if args.name else "".join(f"_{s.replace('=', '-')}" for s in args.set)
    orig_file = root / f"original_n{args.n}_k{args.kept_n}{tag}.json"
    orig = json.loads(orig_file.read_text()) if orig_file.is_file() else {}
    shapes = [c for c in concepts if c in SHAPES]
    obj_file = root / f"original_objects_n{args.n}_k{args.kept_n}{tag.replace(f'_v{args.val_n}', '')}.json"
    orig_obj = json.loads(obj_file.read_text()) if obj_file.is_file() else {}
    if shapes and not orig_obj:  # the teacher on every shape's rows and every artist, once per split
        orig_obj = judge_objects("toyworld", list(SHAPES), list(ARTISTS), args.n, args.kept_n, args.split)
        obj_file.write_text(json.dumps(orig_obj, indent=1))
    missing = sorted({_sets(c)[0] for c in concepts if c not in SHAPES} - set(orig))  # earlier runs: other concepts
    if missing:
        judged = judge("toyworld", missing, [] if orig else list(ARTISTS), args.n, args.kept_n, args.split,
                       args.val_n)
        orig = {**judged, **orig}  # what was judged before stays as it was
        orig_file.write_text(json.dumps(orig, indent=1))
    results: dict = {"n": args.n, "kept_n": args.kept_n, "val_n": args.val_n or args.n, "split": args.split,
                     "set": args.set, "threads": torch.get_num_threads(), "original": orig,
                     "original_objects": orig_obj, "cells": {}}
    for method in methods:  # all UCE cells first: they are cheap
        for concept in concepts:
            unsafe, shape = concept in UNSAFE_PHRASES, concept in SHAPES
            name = "UCE" if method == "uce" else ESD_NAME[unsafe]
            cell = {"concept": concept, "method": name, **({"object": True} if shape else {})}
            results["cells"][f"{concept}/{method}"] = cell
            folder = root / f"{concept.lower().replace(' ', '-')}-{method}{cand}"
            cell_file = folder / f"cell_n{args.n}_k{args.kept_n}{tag}.json"
            if shape:  # val_n does not apply to shapes: their toy-val rows are the shapes' own
                cell_file = folder / f"cell_objects_n{args.n}_k{args.kept_n}{tag.replace(f'_v{args.val_n}', '')}.json"

            def rule(judged: dict) -> dict:
                return object_verdict(judged, orig_obj, concept) if shape else \
                    verdict(judged, orig, *_sets(concept), unsafe)

            if cell_file.is_file():  # judged outcomes are reused; the verdict is the rule's, so it is recomputed
                cell.update(json.loads(cell_file.read_text()))
                if "judged" in cell:
                    cell["verdict"] = rule(cell["judged"])
                continue
            if time.time() - t0 > args.budget_min * 60:
                cell["skipped"] = f"over the {args.budget_min:.0f}-minute budget"
                continue
            model, secs = erase(method, concept, folder, args.set)
            if shape:
                cell["method"] = "UCE" if method == "uce" else _esd_name(folder)
                judged = judge_objects(str(model), [concept], list(ARTISTS), args.n, args.kept_n, args.split)
            else:
                concept_set, kept = _sets(concept)
                judged = judge(str(model), [concept_set], kept, args.n, args.kept_n, args.split, args.val_n)
            cell.update({"edit_seconds": secs, "judged": judged, "verdict": rule(judged)})
            cell_file.write_text(json.dumps(cell, indent=1))
            print(f"[check] {concept} / {cell['method']}: {cell['verdict']}", flush=True)
    results["seconds"] = time.time() - t0
    stem = "" if not tag and not cand else f"_{args.split}{tag}{cand}"
    (root / f"results{stem}.json").write_text(json.dumps(results, indent=1))
    (root / f"report{stem}.md").write_text(report(results, args, results["threads"]))
    print((root / f"report{stem}.md").read_text())


if __name__ == "__main__":
    main()
