"""The ``procpool`` command (and ``python -m procpool``): a thin dispatcher.

Each group of subcommands lives in its own private module listed in
``COMMAND_MODULES``; the module's ``register(subparsers)`` adds its parsers and sets
``handler`` (a function of the parsed arguments returning the exit status) with
``set_defaults``. Adding a subcommand means adding a module here, nothing else.

Exit status: whatever the handler returns; 2 for usage errors (argparse's own, and any
:class:`CommandError`); 130 for a Ctrl-C that reaches here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

# Each module, and the subcommands its ``register`` adds; in the order of
# `procpool --help`. A command line naming a subcommand imports only its module.
COMMAND_MODULES = {
    "procpool._cli.run": ("run", "results", "status"),
    "procpool._cli.fetch": ("fetch",),
    "procpool._cli.serve": ("serve", "client", "loadgen"),
    "procpool._cli.copy": ("copy",),
    "procpool._cli.scan": ("scan",),
}

USAGE_ERROR = 2


class CommandError(Exception):
    """A problem to report in one line, without a traceback, and an exit status."""

    def __init__(self, message: str, status: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.status = status


_SIZE = re.compile(r"(\d+)([kmgt]?)i?b?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``32M``, ``1G`` (powers of 1024): an argparse ``type``."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4096, 64K, 32M, 1G)")
    suffix: str = match[2].lower() or " "
    return int(match[1]) * (1 << (10 * " kmgt".index(suffix)))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only the module that adds it is imported (a
    command's start-up then skips the others' imports)."""
    parser = argparse.ArgumentParser(
        prog="procpool",
        description="procpool's command-line tools. `procpool COMMAND --help` for details.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, commands in COMMAND_MODULES.items():
        if command is None or command in commands:
            importlib.import_module(name).register(subparsers)
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names first, if it is one we know."""
    known = {c for commands in COMMAND_MODULES.values() for c in commands}
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in known else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_named_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        status: int = args.handler(args)
    except CommandError as exc:
        print(f"procpool {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"procpool {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`procpool results | head`): not an error. Point stdout
        # at /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return status
