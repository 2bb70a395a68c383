"""Tasks and objects that fail on purpose, at a chosen stage, for the fault tests.

``Trap(action, stage)`` does ``action`` when it is pickled (stage "pickle") or
unpickled (stage "unpickle"): "raise" raises TrapError, "exit" calls os._exit(7),
"sigkill" and "segfault" kill the process that is (un)pickling it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

ACTIONS = ["raise", "exit", "sigkill", "segfault"]


class TrapError(Exception):
    pass


def act(action: str) -> None:
    if action == "raise":
        raise TrapError(f"trap sprung in {os.getpid()}")
    if action == "exit":
        os._exit(7)
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "segfault":
        ctypes.string_at(0)
    raise AssertionError(action)


def _rebuild(action: str, stage: str) -> Trap:
    if stage == "unpickle":
        act(action)
    return Trap(action, "done")


class Trap:
    def __init__(self, action: str, stage: str) -> None:
        self.action = action
        self.stage = stage

    def __reduce__(self) -> Any:
        if self.stage == "pickle":
            act(self.action)
        return (_rebuild, (self.action, self.stage))


def identity(x: Any) -> Any:
    return x


def run_action(action: str) -> None:
    act(action)


def make_trap(action: str, stage: str) -> Trap:
    return Trap(action, stage)


def square(x: int) -> int:
    return x * x


def getpid(_: object = None) -> int:
    return os.getpid()


def sleep_forever() -> None:
    threading.Event().wait()


# --- a started-event shared with workers through the initializer

_started: Any = None


def init_started(event: Any) -> None:
    global _started
    _started = event


def signal_then_block() -> None:
    _started.set()
    threading.Event().wait()


def kill_once(marker: str) -> str:
    """Kill the worker the first time (creating ``marker``), succeed the next."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return "survived"
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def count_and_raise(counter: str) -> None:
    with open(counter, "a") as f:
        f.write("x")
    raise ValueError("a normal error is never retried")


def raise_base(kind: str) -> None:
    if kind == "SystemExit":
        sys.exit(3)
    raise KeyboardInterrupt


def rss_after_growing(megabytes: int) -> tuple[int, int]:
    """Grow this worker by ``megabytes`` (kept alive) and report (pid, rss)."""
    _hoard.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid(), _rss()


def pid_and_rss() -> tuple[int, int]:
    return os.getpid(), _rss()


_hoard: list[bytearray] = []


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fail_init() -> None:
    raise RuntimeError("the initializer is broken on purpose")


def slow_square(x: int) -> int:
    time.sleep(0.001)
    return x * x


def signal_then_block_item(_: object) -> None:
    signal_then_block()


def run_or_square(x: Any) -> Any:
    if x == "block":
        sleep_forever()
    return x * x


def sigterm_handler_name(_: object = None) -> str:
    import signal as _signal

    handler = _signal.getsignal(_signal.SIGTERM)
    return "default" if handler == _signal.SIG_DFL else repr(handler)


# --- one item of a long imap misbehaves (batches of one-item chunks)

BAD_ITEM = 2500


def act_at(x: int, action: str) -> int:
    """x squared, except that item BAD_ITEM does ``action``."""
    if x == BAD_ITEM:
        act(action)
    return x * x


def block_at(x: int, release: Any) -> int:
    """x squared; item BAD_ITEM first waits for ``release`` (a Manager Event)."""
    if x == BAD_ITEM:
        release.wait()
    return x * x


def forever_at(x: int) -> int:
    if x == BAD_ITEM:
        threading.Event().wait()
    return x * x


def square_or_kill_once(x: Any) -> Any:
    """x squared; a str is a marker path: kill_once(x)."""
    return kill_once(x) if isinstance(x, str) else x * x
