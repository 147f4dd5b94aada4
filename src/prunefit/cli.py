"""Parse ``prunefit <command> [--config FILE] [key=value ...]`` and call the recipe; nothing else.

Every command is a row of ``_COMMANDS`` (help, schema, recipe (default ``prunefit.recipes.<command>:main``),
arguments as data; ``utils.argtable`` builds the parsers); ``_run`` runs any row. User errors: one line, exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from pkgutil import resolve_name as _named
from typing import Callable, Optional, Sequence

from prunefit.errors import ConfigError, PrunefitError
from prunefit.utils import argtable
from prunefit.utils.quiet import quiet_libraries as _quiet_libraries

_Cmd, _a = argtable.Command, argtable.arg
_EXPERIMENTS = {n: f"prunefit.experiments.{n}.config:{c}" for n, c in {
    "table3": "ExperimentConfig", "erasure": "ErasureConfig", "figures": "FiguresConfig", "pareto": "ParetoConfig",
    "distillation": "DistillationConfig"}.items()}
_CONFIG_ARGS = (_a("--config -c FILE", "YAML config file (repeatable; later files override earlier ones)",
                   action="append", default=[]),
                _a("--print-config", "print the resolved config as YAML and exit", action="store_true"),
                _a("overrides key=value", "override config keys, e.g. sampler.steps=10 output_dir=runs/x", nargs="*"))


def _run(args: argparse.Namespace, schema: str = "", recipe: Optional[Callable] = None) -> int:
    """Any command: the config (a model's carried defaults included) or the arguments to the recipe; print its lines,
    a dict of files as ``kind: path`` (a recipe returns None on the non-main processes of a multi-process run)."""
    from prunefit.config.load import load_config, to_yaml

    row, schema = args.row, schema or args.row.schema
    kw = {"log": lambda m: print(m, file=getattr(sys, row.log), flush=True)} if row.log else {}
    if schema:  # a positional holding ``=`` is an override (`attack model=... attack=...`)
        keyed = [(flags[0], key, getattr(args, dest)) for (flags, key, _), dest in zip(row.args, args.dests) if key]
        args.overrides[:0] = [v for flag, _, v in keyed if v and flag[0] != "-" and "=" in v]
        extra = [f"{key}={json.dumps(v)}" for flag, key, v in keyed if v and (flag[0] == "-" or "=" not in v)]
        cfg = load_config(_named(schema), args.config, [*extra, *args.overrides])
        if args.print_config:
            return print(to_yaml(cfg), end="") or 0
    recipe = recipe or _named(row.recipe or f"prunefit.recipes.{args.command}:main")
    res = recipe(cfg, **kw) if schema else recipe(**{dest: getattr(args, dest) for dest in args.dests}, **kw)
    lines = res.lines() if hasattr(res, "lines") else res or ()
    for line in [f"{k}: {v}" for k, v in lines.items()] if isinstance(lines, dict) else lines:
        print(line)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """`evaluate RUN_DIR` runs like any command; `evaluate fid-ref --images DIR` caches FID reference statistics."""
    if args.target != "fid-ref":
        return _run(args)
    if not args.images:
        raise ConfigError("fid-ref needs --images DIR (the real images, e.g. COCO val2017 resized)")
    output, args.target, args.output = args.output, None, None  # neither is a config key here
    fid_ref = _named("prunefit.recipes.evaluate:fid_reference_lines")
    return _run(args, recipe=lambda cfg: fid_ref(args.images, cfg.fid, output))


_COMMANDS: dict[str, _Cmd] = {
    "generate": _Cmd(
        "generate images for prompts (images/, manifest.jsonl, grid.png)", "prunefit.config.schema:GenerateConfig",
        description="Generate images: PNDM 25 steps and guidance 7.5 by default (the toy world: 3.0), a seed per "
        "prompt derived from the run seed and the prompt id; re-running skips finished ids.", args=(
            _a("--prompt -p TEXT", "a prompt (repeatable)", "prompts", action="append", default=[]),
            _a("--prompt-file FILE", ".txt, .csv (prompt column) or .jsonl prompt file", "prompt_file"),
            _a("--output -o DIR", "output folder (config key output_dir)", "output_dir"),
            _a("--expert DIR", "generate with one pruned expert (an expert folder)", "expert"),
            _a("--experts DIR", "routed generation: a `prunefit prune` output folder", "experts"))),
    "prune": _Cmd(
        "APTP: train a prompt router and materialize K experts (or magnitude/random)", "prunefit.config.schema:Prune"
        "Config", description="Defaults follow APTP's official settings (base 3, T 0.4, Sinkhorn eps 0.05 x3, loss "
        "weights 1/2/100/0.2/0.2/0.1/0.1); target = fraction of teacher MACs kept."),
    "finetune": _Cmd(
        "distil an expert from the unpruned teacher (DDPM + output + feature KD)", "prunefit.config.schema:Finetune"
        "Config", description="Defaults follow the paper: weights 1.0/2.0/0.1, AdamW (0.9, 0.999), wd 0, lr 1e-6 "
        "with 250 warm-up steps, min-SNR 5. resume=latest continues exactly."),
    "cache": _Cmd("precompute VAE latents and text embeddings for faster training", "prunefit.recipes.cache:Cache"
                  "Config"),
    "erase": _Cmd(
        "remove concepts with a registered method (esd, uce, concept_prune, advunlearn)", "prunefit.removal.config:"
        "EraseConfig", description="prunefit erase --method esd removal.concepts='[Claude Dots]' esd.train_method="
        "xattn", args=(_a("--method", "removal method (see `prunefit list methods`)", "removal.method"),)),
    "bilevel": _Cmd(
        "fine-tune an expert while suppressing concepts (the paper's method)", "prunefit.removal.bilevel:Bilevel"
        "Config", description="Presets: official (two AdamW, upper every 10, lr 1e-6 / 5e-6) and paper (penalized "
        "minimax, one optimizer, lambda 100, upper every 20)."),
    "experiment": _Cmd(  # schema: table3's (``command_schema("experiment")``); ``args.name``'s when run
        "run an experiment end to end with a report: table3 (the paper's Table 3), erasure (every removal method on "
        "the dense teacher), figures (models x prompts at the same seeds, a labelled grid), pareto (ASR-vs-FJD fronts "
        "over seeds) or distillation (the KD ablation)", _EXPERIMENTS["table3"], "prunefit.experiments.common."
        "console:main", (_a("name", choices=list(_EXPERIMENTS)),), log="stdout",
        handler=lambda args: _run(args, _EXPERIMENTS[args.name])),
    "attack": _Cmd(
        "attack a model's prompts (unlearndiff, p4d, ringabell, none) and judge pre- and post-attack ASR",
        "prunefit.recipes.attack:AttackConfig", description="prunefit attack MODEL_OR_EXPERT --attack unlearndiff "
        "--concept skull --prompts FILE -o DIR [unlearndiff.iterations=40 ...]; re-running resumes.", args=(
            _a("model MODEL_OR_EXPERT", "toyworld, a pipeline or an expert folder", "model", nargs="?"),
            _a("--attack -a", "attack name (see `prunefit list attacks`)", "attack"),
            _a("--concept", "the concept to recover (skull, an artist, nudity)", "concept"),
            _a("--prompts FILE", "prompt file or toy-world set name", "prompts"),
            _a("--output -o DIR", "output folder (config key output_dir)", "output_dir"))),
    "route": _Cmd("assign prompts to experts with a trained router (writes JSONL)", args=(
        _a("--experts EXPERTS", "output_dir of `prunefit prune` (router/ + experts/)", dest="prune_dir", required=True),
        _a("--prompt-file", required=True), _a("--format FORMAT", "prompt file format (see `prunefit list prompt-"
                                               "formats`)", dest="fmt", default="auto"),
        _a("--output -o", "routes file (.jsonl)", required=True))),
    "export": _Cmd("an expert as a pipeline folder plain diffusers loads (trust_remote_code=True)", args=(_a(
        "src EXPERT", "expert, run with expert/, or prune run: one folder per expert, no router (a diffusers pipeline "
        "holds one UNet and routes no prompts)"), _a("--output -o", required=True), _a("--base", "default: its own"))),
    "push": _Cmd("upload a folder and its model card to the Hugging Face Hub", args=(
        _a("folder"), _a("--repo-id", required=True), _a("--private", action="store_true"))),
    "evaluate": _Cmd(
        "run metrics over a generation run (or `evaluate fid-ref`)", "prunefit.recipes.evaluate:EvaluateConfig",
        description="prunefit evaluate RUN_DIR --metrics toyworld,fid ...  |  prunefit evaluate fid-ref --images DIR "
        "(cache FID reference statistics)", handler=_evaluate, args=(
            _a("target RUN_DIR|fid-ref", "generation run folder, or fid-ref", "run_dir", nargs="?"),
            _a("--metrics -m", "comma-separated metric names (see `prunefit list metrics`)", "metrics",
               type=lambda s: [m.strip() for m in s.split(",") if m.strip()]),
            _a("--images", "fid-ref: folder of reference images"),
            _a("--output -o", "results.json path (fid-ref: the stats file)", "output"))),
    "report": _Cmd("tabulate several results.json files (markdown, CSV, image grid)",
                   recipe="prunefit.evaluation.report:report_lines", args=(
        _a("results", "results.json files or run folders holding one", nargs="+"),
        _a("--output -o", "output folder", default="runs/report"),
        _a("--names", "comma-separated row names (default: the run folders' names)",
           type=lambda s: [n.strip() for n in s.split(",")]))),
    "list": _Cmd("list registered metrics, samplers or prompt-file formats", recipe="prunefit.recipes.listing:main",
                 args=(_a("what", choices=["methods", "metrics", "attacks", "schedulers", "prompt-formats"]),)),
    "data": _Cmd("prepare evaluation data sets", sub={"coco-val": _Cmd(
        "COCO-2017 val: one caption per image (lowest annotation id), prompts.csv + resized reference images for FID",
        recipe="prunefit.data.coco:prepare_coco_val", args=(
            _a("--annotations", "captions_val2017.json", required=True, type=Path),
            _a("--images", "val2017 image folder (omit to write prompts only)", type=Path),
            _a("--output -o", required=True, type=Path), _a("-n", "images (sorted by id); 0 = all", type=int,
                                                            default=5000),
            _a("--size", "reference image size (the paper: 512)", type=int, default=512))), "prompts": _Cmd(
        "a published prompt set (i2p, mma-diffusion, ring-a-bell, p4d, unlearndiffatk) from the Hub or a local copy "
        "-> FILE (.csv/.jsonl) + FILE.meta.json (source, revision, protocol)", recipe="prunefit.data.prompt_sets:"
        "prepare_prompt_set", args=(
            _a("name", "i2p, mma-diffusion, ring-a-bell, p4d or unlearndiffatk"),
            _a("--output -o FILE", required=True, type=Path),
            _a("--from SRC", "convert a local copy (file or folder) instead of downloading", dest="source", type=Path),
            _a("--force", "replace an existing FILE", action="store_true"),
            _a("--revision", "Hub branch, tag or commit (default: main)"),
            _a("--files PATTERN", "only the data files matching this glob", dest="files"),
            _a("--prompt-column COL", "the column holding the prompt (default: the set's)", dest="prompt_column"),
            _a("--category NAME", "keep rows whose 'categories' include NAME (I2P: sexual)"),
            _a("--min-nudity PCT", "keep rows with nudity_percentage >= PCT", dest="min_nudity", type=float)))}),
    "import": _Cmd("import models saved by other projects' code as prunefit experts", sub={"aptp": _Cmd(
        "an APTP expert saved by its authors' code (arch_vector.pt + unet/, or quantizer_embeddings.pt + --expert-id) "
        "as an expert folder; records its MAC ratio beside theirs", recipe="prunefit.pruning.import_aptp:import_aptp",
        log="stderr", args=(
            _a("checkpoint CHECKPOINT", "their checkpoint folder (fine-tuned expert or pruning checkpoint)"),
            _a("--output -o EXPERT_DIR", "new expert folder", required=True),
            _a("--base", "the dense model it was pruned from (default: unet/config.json's _name_or_path)"),
            _a("--expert-id", "expert row of a pruning checkpoint's codebook", type=int),
            _a("--reported-ratio", "the authors' MAC ratio (default: resource_ratios.pt, if present)", type=float),
            _a("--tolerance", "largest |ours - theirs| that agrees", type=float, default=0.05)))}),
    "dev": _Cmd("developer tools (full-size random-weight SD pipelines)", sub={"skeleton": _Cmd(
        "write a full-size SD pipeline folder from the published configs, random weights from a seed, real CLIP "
        "tokenizer", recipe="prunefit.recipes.skeleton:main", args=(
            _a("--arch", required=True, choices=["sd15", "sd21", "sd21-base"]),
            _a("--output -o DIR", "new (or empty) folder", dest="out_dir", required=True),
            _a("--seed", type=int, default=0)))}),
    "toyworld": _Cmd("build or inspect the embedded toy world (teacher + judge)", sub={
        "build": _Cmd(
            "train tokenizer, VAE, judge and teacher; export and write the model card", "prunefit.config.schema:"
            "ToyworldBuildConfig", "prunefit.recipes.toyworld_build:main", log="stderr", description="Resumable: "
            "finished stages are skipped and the teacher continues from its last checkpoint in build_dir. Raise "
            "teacher_steps to train further."),
        "show": _Cmd(
            "print the model card and write sample grids per artist and unsafe concept",
            recipe="prunefit.recipes.toyworld_show:show", args=(
                _a("--output -o", "folder for the sample grids", default="runs/toyworld-show"),
                _a("--assets", "toy-world folder (default: the one shipped in the package)"),
                _a("-n N", "images per grid", dest="per_grid", type=int, default=16),
                _a("--seed", type=int, default=0))),
        "measure": _Cmd(
            "re-measure a built toy world's quality (default guidance and 7.5) and rewrite quality.json and "
            "MODEL_CARD.md", recipe="prunefit.recipes.toyworld_build:measure", log="stderr", args=(
                _a("--assets", "toy-world folder (default: the one shipped in the package)"),
                _a("-n", "prompts per set (default: the build's eval_prompts)", type=int, default=None)))}),
}


def command_schema(name: str) -> type:
    """The config class of a command (``generate``, ...) or experiment (``pareto``, ...; ``experiment`` = ``table3``):
    the table config files name in their ``# schema:`` line."""
    schemas = {**{n: c.schema for n, c in _COMMANDS.items() if c.schema}, **_EXPERIMENTS}
    if name not in schemas:
        raise ConfigError(f"unknown schema {name!r}; available: {sorted(schemas)}")
    return _named(schemas[name])


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command, built from ``_COMMANDS``."""
    root = argparse.ArgumentParser(prog="prunefit", description="Prune, distil, unlearn, generate and evaluate "
                                   "Stable Diffusion models.")
    return argtable.build(root, _Cmd("", sub=_COMMANDS), _CONFIG_ARGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; a user error is one line on stderr and exit code 2."""
    _quiet_libraries()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # key=value overrides may follow options (`generate -p x k=v`)
    stray = [u for u in unknown if u.startswith("-") or "=" not in u or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*getattr(args, "overrides", ()), *unknown]
    try:
        return (args.row.handler or _run)(args)
    except PrunefitError as exc:
        print(f"prunefit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("prunefit: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
