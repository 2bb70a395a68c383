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
import sys
from collections.abc import Sequence

# One line each; keep the order of `procpool --help`.
COMMAND_MODULES = (
    "procpool._cli.run",
    "procpool._cli.fetch",
    "procpool._cli.serve",
    "procpool._cli.copy",
    "procpool._cli.scan",
)

USAGE_ERROR = 2


class CommandError(Exception):
    """A problem to report in one line, without a traceback, and an exit status."""

    def __init__(self, message: str, status: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procpool",
        description="procpool's command-line tools. `procpool COMMAND --help` for details.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
