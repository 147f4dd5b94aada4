"""Parse ``prunefit <command> [--config FILE] [key=value ...]`` and call the recipe; nothing else.

Every error that is the user's to fix surfaces as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from prunefit.errors import ConfigError, PrunefitError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config file (repeatable; later files override earlier ones)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config keys, e.g. sampler.steps=10 output_dir=runs/x")


def _load(schema, args: argparse.Namespace, extra: Sequence[str] = ()):
    """``schema`` from --config files, option spellings and overrides (a model's carried defaults included), or
    None after printing it (--print-config)."""
    from prunefit.config.load import load_config, to_yaml

    cfg = load_config(schema, args.config, [*extra, *args.overrides])
    if args.print_config:
        print(to_yaml(cfg), end="")
        return None
    return cfg


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from prunefit.recipes import evaluate
    from prunefit.recipes.evaluate import EvaluateConfig

    target = args.target
    if target and "=" in target:  # `prunefit evaluate run_dir=... metrics=...`
        args.overrides.insert(0, target)
        target = None
    extra = []
    if args.metrics:
        extra.append("metrics=" + json.dumps([m.strip() for m in args.metrics.split(",") if m.strip()]))
    if target == "fid-ref":
        if not args.images:
            raise ConfigError("fid-ref needs --images DIR (the real images, e.g. COCO val2017 resized)")
        cfg = _load(EvaluateConfig, args, extra)
        if cfg is None:
            return 0
        out = evaluate.fid_reference(args.images, cfg.fid, args.output)
        print(f"FID reference statistics ({cfg.fid.features}) -> {out}")
        return 0
    if target:
        extra.append(f"run_dir={json.dumps(target)}")
    if args.output:
        extra.append(f"output={json.dumps(args.output)}")
    cfg = _load(EvaluateConfig, args, extra)
    if cfg is None:
        return 0
    print("\n".join(evaluate.main(cfg).lines()))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunefit.evaluation.report import write_report

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    files = write_report(args.results, Path(args.output), names=names)
    print(Path(files["markdown"]).read_text())
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "metrics":
        from prunefit.evaluation.registry import list_metrics

        for m in list_metrics():
            print(f"{m.name:12s} [{m.kind}] {m.summary}")
    elif args.what == "methods":
        from prunefit.removal.registry import list_methods

        for m in list_methods():
            print(f"{m.name:14s} [{m.kind}] {m.summary}  ({m.reference})")
    elif args.what == "attacks":
        from prunefit.attacks.registry import list_attacks

        for a in list_attacks():
            print(f"{a.name:12s} [{a.kind}] {a.summary}  ({a.reference})")
    elif args.what == "schedulers":
        from prunefit.models.schedulers import SCHEDULER_CLASSES

        for name, cls in SCHEDULER_CLASSES.items():
            print(f"{name:16s} {cls.__name__}")
    elif args.what == "prompt-formats":
        from prunefit.data.prompts import PROMPT_FORMATS

        for name, text in PROMPT_FORMATS.items():
            print(f"{name:15s} {text}")
    return 0


def _cmd_data_coco(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunefit.data.coco import prepare_coco_val

    files = prepare_coco_val(Path(args.annotations), Path(args.images) if args.images else None,
                             Path(args.output), n=args.n, size=args.size)
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0


@dataclass(frozen=True)
class _Command:
    """A config-driven subcommand: its schema and recipe (``module:name``), and the options
    that are spellings of config keys (``dest -> key``; a list-valued key takes the option's list)."""

    schema: str
    recipe: str
    options: tuple[tuple[str, str], ...] = ()
    positional: Optional[tuple[str, str]] = None
    """(dest, key) of a positional argument; one holding ``=`` is read as an override instead."""


_COMMANDS = {
    "generate": _Command("prunefit.config.schema:GenerateConfig", "prunefit.recipes.generate:main",
                         options=(("prompt", "prompts"), ("prompt_file", "prompt_file"), ("output", "output_dir"),
                                  ("expert", "expert"), ("experts", "experts"))),
    "prune": _Command("prunefit.config.schema:PruneConfig", "prunefit.recipes.prune:main"),
    "finetune": _Command("prunefit.config.schema:FinetuneConfig", "prunefit.recipes.finetune:main"),
    "cache": _Command("prunefit.recipes.cache:CacheConfig", "prunefit.recipes.cache:main"),
    "erase": _Command("prunefit.removal.config:EraseConfig", "prunefit.recipes.erase:main",
                      options=(("method", "removal.method"),)),
    "bilevel": _Command("prunefit.removal.bilevel:BilevelConfig", "prunefit.recipes.bilevel:main"),
    "attack": _Command("prunefit.recipes.attack:AttackConfig", "prunefit.recipes.attack:main",
                       options=(("attack", "attack"), ("concept", "concept"), ("prompts", "prompts"),
                                ("output", "output_dir")), positional=("model", "model")),
}


def _named(path: str):
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _option_overrides(spec: _Command, args: argparse.Namespace) -> list[str]:
    import json

    out = []
    if spec.positional:
        dest, key = spec.positional
        value = getattr(args, dest)
        if value and "=" in value:  # `prunefit attack model=... attack=...`
            args.overrides.insert(0, value)
        elif value:
            out.append(f"{key}={json.dumps(value)}")
    out += [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in spec.options if getattr(args, dest)]
    return out


def _cmd_config(args: argparse.Namespace) -> int:
    """Every config-driven command: load its config (files, options, overrides), run its recipe, print the result's
    own summary lines (a recipe returns None on the non-main processes of a multi-process run)."""
    spec = _COMMANDS[args.command]
    cfg = _load(_named(spec.schema), args, _option_overrides(spec, args))
    if cfg is None:
        return 0
    res = _named(spec.recipe)(cfg)
    for line in res.lines() if res is not None else ():
        print(line)
    return 0


@dataclass(frozen=True)
class _Experiment:
    """One `prunefit experiment` name: its recipe module, config class, and the files its run reports."""

    recipe: str
    config: str
    per_concept: bool = False
    """One report per concept (``<output>/<concept>/report.md``) instead of one in the output folder."""
    extras: tuple[str, ...] = ()
    """Other outputs beside each report, printed as ``name: path``."""


_EXPERIMENTS = {
    "table3": _Experiment("table3.run", "ExperimentConfig", per_concept=True),
    "erasure": _Experiment("erasure.run", "ErasureConfig"),
    "figures": _Experiment("figures.run", "FiguresConfig"),
    "pareto": _Experiment("pareto.run", "ParetoConfig", per_concept=True, extras=("plot:pareto.png",)),
    "distillation": _Experiment("distillation.run", "DistillationConfig", extras=("curves:curves.png",)),
}


def command_schema(name: str) -> type:
    """The config class of a command (``generate``, ``evaluate``, ...) or an experiment (``table3``, alias
    ``experiment``; ``pareto``, ...): the table config files name in their ``# schema:`` line."""
    import importlib

    if name == "evaluate":
        return _named("prunefit.recipes.evaluate:EvaluateConfig")
    if name in _COMMANDS:
        return _named(_COMMANDS[name].schema)
    spec = _EXPERIMENTS.get("table3" if name == "experiment" else name)
    if spec is None:
        raise ConfigError(f"unknown schema {name!r}; commands: {sorted(_COMMANDS)} + evaluate, "
                          f"experiments: {sorted(_EXPERIMENTS)}")
    return getattr(importlib.import_module(f"prunefit.experiments.{spec.recipe}"), spec.config)


def _cmd_experiment(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    spec = _EXPERIMENTS[args.name]
    recipe = importlib.import_module(f"prunefit.experiments.{spec.recipe}")
    cfg = _load(getattr(recipe, spec.config), args)
    if cfg is None:
        return 0
    if args.name == "figures":
        print("\n".join(recipe.main(cfg).lines()))
        return 0
    results = recipe.main(cfg, log=lambda m: print(m, flush=True))
    if spec.per_concept:
        from prunefit.experiments.common.stages import concept_slug

        folders = [Path(cfg.output_dir) / concept_slug(concept) for concept in results]
    else:
        folders = [Path(cfg.output_dir)]
    for folder in folders:
        print((folder / "report.md").read_text())
        print(f"report: {folder / 'report.md'}")
        for extra in spec.extras:
            name, _, file = extra.partition(":")
            print(f"{name}: {folder / file}")
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunefit.recipes.route import route_file

    out, loads = route_file(Path(args.experts), args.prompt_file, Path(args.output), args.format)
    print(f"expert loads: {loads}")
    print(f"routes: {out}")
    return 0


def _cmd_dev_skeleton(args: argparse.Namespace) -> int:
    from prunefit.recipes.skeleton import main as skeleton

    res = skeleton(args.arch, args.output, seed=args.seed)
    print(f"{res.arch} skeleton (random weights, seed {res.seed}): {res.path} "
          f"({res.bytes_on_disk / 1e9:.2f} GB, {res.seconds:.0f} s); use it as model={res.path}")
    return 0


def _cmd_toyworld_build(args: argparse.Namespace) -> int:
    from prunefit.config.schema import ToyworldBuildConfig
    from prunefit.recipes.toyworld_build import run_build

    cfg = _load(ToyworldBuildConfig, args)
    if cfg is None:
        return 0
    print(f"toy world written to {run_build(cfg, log=lambda m: print(m, file=sys.stderr))}")
    return 0


def _cmd_toyworld_show(args: argparse.Namespace) -> int:
    from prunefit.recipes.toyworld_show import show

    print(show(args.assets, args.output, per_grid=args.n, seed=args.seed).summary())
    return 0


def _cmd_toyworld_measure(args: argparse.Namespace) -> int:
    from prunefit.recipes.toyworld_build import remeasure

    print(remeasure(args.assets, args.n, log=lambda m: print(m, file=sys.stderr)).read_text())
    return 0


def _add_toyworld_parser(sub) -> None:
    tw = sub.add_parser("toyworld", help="build or inspect the embedded toy world (teacher + judge)")
    tsub = tw.add_subparsers(dest="toyworld_command", metavar="<subcommand>", required=True)
    b = tsub.add_parser("build", help="train tokenizer, VAE, judge and teacher; export and write the model card",
                        description="Resumable: finished stages are skipped and the teacher continues from its "
                                    "last checkpoint in build_dir. Raise teacher_steps to train further.")
    _config_args(b)
    b.set_defaults(func=_cmd_toyworld_build)
    s = tsub.add_parser("show", help="print the model card and write sample grids per artist and unsafe concept")
    s.add_argument("--output", "-o", default="runs/toyworld-show", help="folder for the sample grids")
    s.add_argument("--assets", help="toy-world folder (default: the one shipped in the package)")
    s.add_argument("-n", type=int, default=16, help="images per grid")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_toyworld_show)
    m = tsub.add_parser("measure", help="re-measure a built toy world's quality (default guidance and 7.5) and "
                                        "rewrite quality.json and MODEL_CARD.md")
    m.add_argument("--assets", help="toy-world folder (default: the one shipped in the package)")
    m.add_argument("-n", type=int, default=None, help="prompts per set (default: the build's eval_prompts)")
    m.set_defaults(func=_cmd_toyworld_measure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunefit",
        description="Prune, distil, unlearn, generate and evaluate Stable Diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    _add_model_parsers(sub)
    _add_experiment_parsers(sub)
    _add_evaluation_parsers(sub)
    _add_tool_parsers(sub)
    _add_toyworld_parser(sub)
    return parser


def _add_model_parsers(sub) -> None:
    """The subcommands generate, prune, finetune, cache, erase, bilevel: the commands that make or change models."""
    g = sub.add_parser("generate", help="generate images for prompts (images/, manifest.jsonl, grid.png)",
                       description="Generate images: PNDM 25 steps and guidance 7.5 by default (the toy world: "
                                   "3.0), a seed per prompt derived from the run seed and the prompt id; re-running "
                                   "skips finished ids.")
    g.add_argument("--prompt", "-p", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)")
    g.add_argument("--prompt-file", metavar="FILE", help=".txt, .csv (prompt column) or .jsonl prompt file")
    g.add_argument("--output", "-o", metavar="DIR", help="output folder (config key output_dir)")
    g.add_argument("--expert", metavar="DIR", help="generate with one pruned expert (an expert folder)")
    g.add_argument("--experts", metavar="DIR", help="routed generation: a `prunefit prune` output folder")
    _config_args(g)
    g.set_defaults(func=_cmd_config)

    pr = sub.add_parser("prune", help="APTP: train a prompt router and materialize K experts (or magnitude/random)",
                        description="Defaults follow APTP's official settings (base 3, T 0.4, Sinkhorn eps 0.05 x3, "
                                    "loss weights 1/2/100/0.2/0.2/0.1/0.1); target = fraction of teacher MACs kept.")
    _config_args(pr)
    pr.set_defaults(func=_cmd_config)

    ft = sub.add_parser("finetune", help="distil an expert from the unpruned teacher (DDPM + output + feature KD)",
                        description="Defaults follow the paper: weights 1.0/2.0/0.1, AdamW (0.9, 0.999), wd 0, "
                                    "lr 1e-6 with 250 warm-up steps, min-SNR 5. resume=latest continues exactly.")
    _config_args(ft)
    ft.set_defaults(func=_cmd_config)

    ca = sub.add_parser("cache", help="precompute VAE latents and text embeddings for faster training")
    _config_args(ca)
    ca.set_defaults(func=_cmd_config)

    er = sub.add_parser("erase", help="remove concepts with a registered method (esd, uce, concept_prune, advunlearn)",
                        description="prunefit erase --method esd removal.concepts='[Claude Dots]' "
                                    "esd.train_method=xattn")
    er.add_argument("--method", help="removal method (see `prunefit list methods`)")
    _config_args(er)
    er.set_defaults(func=_cmd_config)

    bl = sub.add_parser("bilevel", help="fine-tune an expert while suppressing concepts (the paper's method)",
                        description="Presets: official (two AdamW, upper every 10, lr 1e-6 / 5e-6) and paper "
                                    "(penalized minimax, one optimizer, lambda 100, upper every 20).")
    _config_args(bl)
    bl.set_defaults(func=_cmd_config)


def _add_experiment_parsers(sub) -> None:
    """The subcommands experiment, attack, route: whole studies and what runs on a trained model."""
    ex = sub.add_parser("experiment", help="run an experiment end to end with a report: table3 (the paper's "
                                           "Table 3), erasure (every removal method on the dense teacher), "
                                           "figures (models x prompts at the same seeds, a labelled grid), "
                                           "pareto (ASR-vs-FJD fronts over seeds) or distillation (the KD "
                                           "ablation)")
    ex.add_argument("name", choices=list(_EXPERIMENTS))
    _config_args(ex)
    ex.set_defaults(func=_cmd_experiment)

    at = sub.add_parser("attack", help="attack a model's prompts (unlearndiff, p4d, ringabell, none) and judge "
                                       "pre- and post-attack ASR",
                        description="prunefit attack MODEL_OR_EXPERT --attack unlearndiff --concept skull "
                                    "--prompts FILE -o DIR [unlearndiff.iterations=40 ...]; re-running resumes.")
    at.add_argument("model", nargs="?", metavar="MODEL_OR_EXPERT", help="toyworld, a pipeline or an expert folder")
    at.add_argument("--attack", "-a", help="attack name (see `prunefit list attacks`)")
    at.add_argument("--concept", help="the concept to recover (skull, an artist, nudity)")
    at.add_argument("--prompts", metavar="FILE", help="prompt file or toy-world set name")
    at.add_argument("--output", "-o", metavar="DIR", help="output folder (config key output_dir)")
    _config_args(at)
    at.set_defaults(func=_cmd_config)

    ro = sub.add_parser("route", help="assign prompts to experts with a trained router (writes JSONL)")
    ro.add_argument("--experts", required=True, help="output_dir of `prunefit prune` (router/ + experts/)")
    ro.add_argument("--prompt-file", required=True)
    ro.add_argument("--format", default="auto", help="prompt file format (see `prunefit list prompt-formats`)")
    ro.add_argument("--output", "-o", required=True, help="routes file (.jsonl)")
    ro.set_defaults(func=_cmd_route)


def _add_evaluation_parsers(sub) -> None:
    """The subcommands evaluate, report, list: measuring runs and showing what is registered."""
    e = sub.add_parser("evaluate", help="run metrics over a generation run (or `evaluate fid-ref`)",
                       description="prunefit evaluate RUN_DIR --metrics toyworld,fid ...  |  "
                                   "prunefit evaluate fid-ref --images DIR (cache FID reference statistics)")
    e.add_argument("target", nargs="?", metavar="RUN_DIR|fid-ref", help="generation run folder, or fid-ref")
    e.add_argument("--metrics", "-m", help="comma-separated metric names (see `prunefit list metrics`)")
    e.add_argument("--images", help="fid-ref: folder of reference images")
    e.add_argument("--output", "-o", help="results.json path (fid-ref: the stats file)")
    _config_args(e)
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="tabulate several results.json files (markdown, CSV, image grid)")
    r.add_argument("results", nargs="+", help="results.json files or run folders holding one")
    r.add_argument("--output", "-o", default="runs/report", help="output folder")
    r.add_argument("--names", help="comma-separated row names (default: the run folders' names)")
    r.set_defaults(func=_cmd_report)

    ls = sub.add_parser("list", help="list registered metrics, samplers or prompt-file formats")
    ls.add_argument("what", choices=["methods", "metrics", "attacks", "schedulers", "prompt-formats"])
    ls.set_defaults(func=_cmd_list)


def _add_tool_parsers(sub) -> None:
    """The subcommands data, dev: preparing evaluation data and full-size developer pipelines."""
    d = sub.add_parser("data", help="prepare evaluation data sets")
    dsub = d.add_subparsers(dest="data_command", metavar="<subcommand>", required=True)
    c = dsub.add_parser("coco-val", help="COCO-2017 val: one caption per image (lowest annotation id), "
                                         "prompts.csv + resized reference images for FID")
    c.add_argument("--annotations", required=True, help="captions_val2017.json")
    c.add_argument("--images", help="val2017 image folder (omit to write prompts only)")
    c.add_argument("--output", "-o", required=True)
    c.add_argument("-n", type=int, default=5000, help="images (sorted by id); 0 = all")
    c.add_argument("--size", type=int, default=512, help="reference image size (the paper: 512)")
    c.set_defaults(func=_cmd_data_coco)

    dv = sub.add_parser("dev", help="developer tools (full-size random-weight SD pipelines)")
    dvsub = dv.add_subparsers(dest="dev_command", metavar="<subcommand>", required=True)
    sk = dvsub.add_parser("skeleton", help="write a full-size SD pipeline folder from the published configs, "
                                           "random weights from a seed, real CLIP tokenizer")
    sk.add_argument("--arch", required=True, choices=["sd15", "sd21", "sd21-base"])
    sk.add_argument("--output", "-o", required=True, metavar="DIR", help="new (or empty) folder")
    sk.add_argument("--seed", type=int, default=0)
    sk.set_defaults(func=_cmd_dev_skeleton)

def _quiet_libraries() -> None:
    """Keep third-party info/warning chatter (torchvision fallbacks, deprecations) off the terminal."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("diffusers", "transformers"):
        try:
            lib = __import__(name, fromlist=["logging"])
            lib.utils.logging.set_verbosity_error()
        except Exception:  # pragma: no cover - a missing library reports itself later
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    parser = build_parser()
    # key=value overrides may follow options (`generate -p x model=tiny`); argparse leaves those unparsed.
    args, unknown = parser.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("-") or "=" not in u or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if unknown:
        args.overrides = [*args.overrides, *unknown]
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PrunefitError as exc:
        print(f"prunefit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("prunefit: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
