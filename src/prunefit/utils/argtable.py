"""Build an argparse parser from a table of commands: each row its help, arguments and what runs it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional


def arg(spec: str, help: Optional[str] = None, key: str = "", **kw: Any) -> tuple:
    """An argument as usage shows it (``"--output -o DIR"``: flags, then any metavar), its help, the config key it
    spells ("" = none) and argparse's other keywords."""
    flags, metavar = [f for i, f in enumerate(spec.split()) if i == 0 or f[0] == "-"], spec.split()[1:][-1:]
    return flags, key, {"help": help, **kw, **({"metavar": metavar[0]} if metavar and metavar[0][0] != "-" else {})}


@dataclass(frozen=True)
class Command:
    """A command: subcommands, or a recipe (``module:name``) that takes the config of ``schema`` (``module:Class``)
    or, without one, the arguments as keywords."""

    help: str
    schema: str = ""
    recipe: str = ""
    args: tuple = ()
    description: Optional[str] = None
    sub: Optional[dict[str, Command]] = None
    log: str = ""
    """"stdout" / "stderr": the recipe's ``log=`` prints its progress there."""
    handler: Optional[Callable[[argparse.Namespace], int]] = None
    """Runs the command instead of the table's generic handler."""


def build(p: argparse.ArgumentParser, row: Command, config_args: tuple = (),
          dest: str = "command") -> argparse.ArgumentParser:
    """``p`` with ``row``'s arguments (then ``config_args`` where it has a schema), or with a parser per subcommand;
    a leaf's parsed namespace holds its ``row`` and the ``dests`` of its own arguments."""
    if row.sub:
        sub = p.add_subparsers(dest=dest, metavar="<command>" if dest == "command" else "<subcommand>", required=True)
        for name, r in row.sub.items():
            build(sub.add_parser(name, help=r.help, description=r.description), r, config_args, f"{name}_command")
        return p
    dests = [p.add_argument(*flags, **kw).dest for flags, _, kw in (*row.args, *(config_args if row.schema else ()))]
    p.set_defaults(row=row, dests=dests[:len(row.args)])
    return p
