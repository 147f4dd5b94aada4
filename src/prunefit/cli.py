"""Parse ``prunefit <command> [--config FILE] [key=value ...]`` and call the recipe; nothing else.

Every error that is the user's to fix surfaces as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from prunefit.errors import PrunefitError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config file (repeatable; later files override earlier ones)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config keys, e.g. sampler.steps=10 output_dir=runs/x")


def _load(schema, args: argparse.Namespace, extra: Sequence[str] = ()):
    from prunefit.config.load import load_config, to_yaml

    cfg = load_config(schema, args.config, [*extra, *args.overrides])
    if args.print_config:
        print(to_yaml(cfg), end="")
        return None
    return cfg


def _cmd_generate(args: argparse.Namespace) -> int:
    import json

    from prunefit.config.schema import GenerateConfig
    from prunefit.recipes import generate

    extra = []
    if args.prompt:
        extra.append("prompts=" + json.dumps(args.prompt))
    if args.prompt_file:
        extra.append(f"prompt_file={json.dumps(args.prompt_file)}")
    if args.output:
        extra.append(f"output_dir={json.dumps(args.output)}")
    cfg = _load(GenerateConfig, args, extra)
    if cfg is None:
        return 0
    res = generate.main(cfg)
    print(f"generated {res.generated} image(s), reused {res.skipped} -> {res.output_dir / 'images'}")
    print(f"manifest: {res.manifest}")
    if res.grid:
        print(f"grid: {res.grid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunefit",
        description="Prune, distil, unlearn, generate and evaluate Stable Diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    g = sub.add_parser("generate", help="generate images for prompts (images/, manifest.jsonl, grid.png)",
                       description="Generate images: PNDM 25 steps and guidance 7.5 by default, a seed per prompt "
                                   "derived from the run seed and the prompt id; re-running skips finished ids.")
    g.add_argument("--prompt", "-p", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)")
    g.add_argument("--prompt-file", metavar="FILE", help=".txt, .csv (prompt column) or .jsonl prompt file")
    g.add_argument("--output", "-o", metavar="DIR", help="output folder (config key output_dir)")
    _config_args(g)
    g.set_defaults(func=_cmd_generate)

    from prunefit.toyworld.cli import add_toyworld_parser

    add_toyworld_parser(sub)

    return parser


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
    args = parser.parse_args(argv)
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
