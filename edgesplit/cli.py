"""The ``edgesplit`` command line.

Each subcommand is a module with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)
-> int``. Core commands live in :mod:`edgesplit.commands`; packages above the core (agents,
experiments) contribute theirs through the ``edgesplit.commands`` entry-point group, so the core
never imports them. Bad input (any :class:`ValueError`, which all edgesplit errors are, or a
missing file) exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from types import ModuleType

CORE_COMMANDS = ["plan", "profile", "reproduce", "benchmark", "train", "cluster"]


def _load_commands() -> list[ModuleType]:
    mods = []
    for name in CORE_COMMANDS:
        try:
            mods.append(importlib.import_module(f"edgesplit.commands.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"edgesplit.commands.{name}":
                raise
    for ep in entry_points(group="edgesplit.commands"):
        try:
            mods.append(ep.load())
        except ImportError as exc:  # an optional package that is not installed
            print(f"edgesplit: command {ep.name!r} unavailable ({exc})", file=sys.stderr)
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The top-level parser and the command modules by name."""
    parser = argparse.ArgumentParser(
        prog="edgesplit",
        description="EdgeSplit testbed: schedule parallel split learning on heterogeneous edge devices.",
    )
    from edgesplit import __version__

    parser.add_argument("--version", action="version", version=f"edgesplit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, ModuleType] = {}
    for mod in _load_commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        commands[mod.NAME] = mod
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgesplit`` console script."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(commands[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgesplit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgesplit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
