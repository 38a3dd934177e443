"""The ``edgesplit`` command line.

Each subcommand is a module with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)
-> int``. Core commands live in :mod:`edgesplit.commands`; packages above the core (agents,
experiments) contribute theirs through the ``edgesplit.commands`` entry-point group, so the core
never imports them.

Fast help: only the module of the command being run is imported. The one-line ``HELP`` of the
others is read from their source (``ast``), so ``edgesplit --help`` imports neither torch nor
gymnasium nor stable-baselines3.

One rule for errors: anything a user can cause (bad input: any :class:`ValueError`, which all
edgesplit errors are; a missing or unreadable file; a missing optional package) ends with one
line on stderr, ``edgesplit COMMAND: error: ...``, and exit status 2. ``--debug`` (before or
after the command) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

CORE_COMMANDS = ["plan", "profile", "reproduce", "benchmark", "train", "cluster"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, EOFError)
"""Exceptions that are the user's to fix (bad values, files, optional packages): one line, exit 2.
``OSError`` covers missing files, folders given for files, permissions, a port in use."""


@dataclass
class CommandRef:
    """A subcommand known by name and module path; imported only when it runs or its help is asked."""

    name: str
    module: str
    help: str
    loader: object = None  # an entry point (``.load()``) for contributed commands

    def load(self) -> ModuleType:
        """Import the command's module."""
        if self.loader is not None:
            return self.loader.load()  # type: ignore[attr-defined]
        return importlib.import_module(self.module)


def _module_file(module: str) -> str | None:
    """The source file of ``module`` without importing it or its packages (editable or installed)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    # Resolve package folders level by level through the top package's search path, which for an
    # editable install maps edgesplit.agents -> agents/ etc.; fall back to importing the parent.
    try:
        parent = importlib.util.find_spec(".".join(parts[:-1])) if len(parts) > 2 else spec
    except ImportError:
        return None
    if parent is None or not parent.submodule_search_locations:
        return None
    for loc in parent.submodule_search_locations:
        path = os.path.join(loc, parts[-1] + ".py")
        if os.path.isfile(path):
            return path
    return None


def _read_help(module: str) -> str:
    """The module's ``HELP = "..."`` constant, read from its source with ``ast`` (no import)."""
    path = _module_file(module)
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets):
            try:
                return str(ast.literal_eval(node.value))
            except ValueError:
                return ""
    return ""


def command_refs() -> list[CommandRef]:
    """Every subcommand: the core ones, then those contributed through the entry-point group."""
    refs = []
    for name in CORE_COMMANDS:
        module = f"edgesplit.commands.{name}"
        if _module_file(module) is not None:
            refs.append(CommandRef(name, module, _read_help(module)))
    for ep in entry_points(group="edgesplit.commands"):
        refs.append(CommandRef(ep.name, ep.value.split(":")[0], _read_help(ep.value.split(":")[0]), ep))
    return refs


def _add_command(sub: argparse._SubParsersAction, mod: ModuleType) -> argparse.ArgumentParser:
    p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error instead of one line")
    mod.add_arguments(p)
    return p


def build_parser(only: str | None = None, full: bool = False) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The top-level parser and the imported command modules by name.

    ``full``: import every command and add all its options (tests, documentation); otherwise only
    the command ``only`` is imported and the others are listed by name and help.
    """
    parser = argparse.ArgumentParser(
        prog="edgesplit",
        description="EdgeSplit testbed: schedule parallel split learning on heterogeneous edge devices.",
    )
    from edgesplit import __version__

    parser.add_argument("--version", action="version", version=f"edgesplit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, ModuleType] = {}
    for ref in command_refs():
        if full or ref.name == only:
            try:
                mod = ref.load()
            except ImportError as exc:  # an optional package that is not installed
                print(f"edgesplit: command {ref.name!r} unavailable ({exc})", file=sys.stderr)
                continue
            _add_command(sub, mod)
            commands[mod.NAME] = mod
        else:
            sub.add_parser(ref.name, help=ref.help, add_help=False)
    return parser, commands


def _selected_command(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is not an option (the subcommand), if any."""
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgesplit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    name = _selected_command(argv)
    try:
        parser, commands = build_parser(only=name)
    except Exception as exc:  # a broken installation: still one line unless --debug
        if debug:
            raise
        print(f"edgesplit: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(commands[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print(f"edgesplit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except USER_ERRORS as exc:
        if debug:
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, ImportError) and exc.name and exc.name not in msg:
            msg = f"{msg} (module {exc.name})"
        print(f"edgesplit {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
