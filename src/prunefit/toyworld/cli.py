"""The ``prunefit toyworld`` commands: ``build`` (train and export the world's models) and ``show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_build(args: argparse.Namespace) -> int:
    from prunefit.cli import _load
    from prunefit.config.schema import ToyworldBuildConfig
    from prunefit.toyworld.build import run_build

    cfg = _load(ToyworldBuildConfig, args)
    if cfg is None:
        return 0
    assets = run_build(cfg, log=lambda m: print(m, file=sys.stderr))
    print(f"toy world written to {assets}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from prunefit.errors import ModelLoadError
    from prunefit.toyworld.paths import assets_dir as default_assets_dir
    from prunefit.toyworld.show import write_sample_grids

    assets = Path(args.assets) if args.assets else default_assets_dir()
    card = assets / "MODEL_CARD.md"
    if not card.is_file():
        raise ModelLoadError(f"no toy world at {assets}; run `prunefit toyworld build` first")
    print(card.read_text())
    paths = write_sample_grids(assets, Path(args.output), per_grid=args.n, seed=args.seed)
    print("sample grids:\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from prunefit.errors import ModelLoadError
    from prunefit.toyworld.build import remeasure
    from prunefit.toyworld.paths import assets_dir as default_assets_dir

    assets = Path(args.assets) if args.assets else default_assets_dir()
    if not (assets / "quality.json").is_file():
        raise ModelLoadError(f"no exported toy world at {assets} (no quality.json); run `prunefit toyworld build`")
    card = remeasure(assets, args.n, log=lambda m: print(m, file=sys.stderr))
    print(card.read_text())
    return 0


def add_toyworld_parser(sub) -> None:
    from prunefit.cli import _config_args

    tw = sub.add_parser("toyworld", help="build or inspect the embedded toy world (teacher + judge)")
    tsub = tw.add_subparsers(dest="toyworld_command", metavar="<subcommand>", required=True)
    b = tsub.add_parser("build", help="train tokenizer, VAE, judge and teacher; export and write the model card",
                        description="Resumable: finished stages are skipped and the teacher continues from its "
                                    "last checkpoint in build_dir. Raise teacher_steps to train further.")
    _config_args(b)
    b.set_defaults(func=_cmd_build)
    s = tsub.add_parser("show", help="print the model card and write sample grids per artist and unsafe concept")
    s.add_argument("--output", "-o", default="runs/toyworld-show", help="folder for the sample grids")
    s.add_argument("--assets", help="toy-world folder (default: the one shipped in the package)")
    s.add_argument("-n", type=int, default=16, help="images per grid")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_show)
    m = tsub.add_parser("measure", help="re-measure a built toy world's quality (default guidance and 7.5) and "
                                        "rewrite quality.json and MODEL_CARD.md")
    m.add_argument("--assets", help="toy-world folder (default: the one shipped in the package)")
    m.add_argument("-n", type=int, default=None, help="prompts per set (default: the build's eval_prompts)")
    m.set_defaults(func=_cmd_measure)
