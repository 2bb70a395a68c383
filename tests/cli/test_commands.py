"""The `procpool` dispatcher: every subcommand is where COMMAND_MODULES says, and a
command line imports only the module of the command it names."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from procpool._cli import COMMAND_MODULES, build_parser


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_module_adds_exactly_the_commands_listed() -> None:
    everything = _choices(build_parser())
    assert everything == {c for commands in COMMAND_MODULES.values() for c in commands}
    for commands in COMMAND_MODULES.values():
        for command in commands:
            assert _choices(build_parser(command)) == set(commands)


@pytest.mark.parametrize("command", ["scan", "serve", "status"])
def test_a_command_imports_no_other_command(command: str) -> None:
    code = (
        "import sys\nfrom procpool._cli import main\n"
        f"try:\n    main(['{command}', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('procpool._cli.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip().splitlines()[-1]
    [own] = [m for m, cmds in COMMAND_MODULES.items() if command in cmds]
    for module in COMMAND_MODULES:
        if module != own:
            assert module not in out, (module, out)
