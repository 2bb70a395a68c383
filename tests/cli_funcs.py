"""Target functions for tests/cli/run/test_cli_run.py (run by `procpool run` in workers).

Some take instructions from environment variables that the test sets for the CLI
subprocess: ``CLI_TEST_FIFO`` (a FIFO to report progress on), ``CLI_TEST_GATE`` (inputs
from this number on report and then hang) and ``CLI_TEST_MARKER`` (a file that records
a first attempt).
"""

from __future__ import annotations

import os
import signal
import time


def upper(line: str) -> str:
    return line.upper()


def square(n: int) -> int:
    return n * n


def add(a: int, b: int = 0) -> int:
    return a + b


def odd_fails(line: str) -> int:
    n = int(line)
    if n % 2:
        raise ValueError(f"{n} is odd")
    return n


def as_set(line: str) -> set[str]:
    return set(line)


def kill_on(line: str) -> str:
    """Kills its own worker on the input ``die``."""
    if line == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return line


def die_once(line: str) -> str:
    """Kills its worker the first time it sees ``flaky`` (recorded in CLI_TEST_MARKER)."""
    if line == "flaky":
        marker = os.environ["CLI_TEST_MARKER"]
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os._exit(3)
    return line


def hang_on(line: str) -> str:
    """Hangs (as a stuck call would) on the input ``hang``."""
    if line == "hang":
        time.sleep(120)
    return line


def gated(n: int) -> int:
    """Inputs below CLI_TEST_GATE return; the others report "pid n" on the FIFO and hang."""
    gate = os.environ.get("CLI_TEST_GATE")
    if gate is not None and n >= int(gate):
        fd = os.open(os.environ["CLI_TEST_FIFO"], os.O_WRONLY)
        os.write(fd, f"{os.getpid()} {n}\n".encode())
        os.close(fd)
        time.sleep(120)  # a long call, ended by the test (its parent's death, or Ctrl-C)
    return n * n


def bulky(n: int) -> str:
    """A result of a few kilobytes, to fill a size-limited disk."""
    return f"{n}:" + "x" * 4000
