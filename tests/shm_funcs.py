"""Worker-side helpers for the large-buffer tests."""

from __future__ import annotations

import mmap
import os
import signal
from typing import Any


def describe(a: Any) -> tuple[bool, int, float]:
    """Whether ``a`` is backed by a shared mapping (no copy), its size and sum."""
    base = a
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap), a.nbytes, float(a.sum())


def double(a: Any) -> Any:
    return a * 2


def echo(a: Any) -> Any:
    return a


def scribble_then_die(a: Any, marker: str) -> Any:
    """Change the argument in place, then die the first time (a retry follows)."""
    a[:] = -1
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return a
    os.kill(os.getpid(), signal.SIGKILL)
    return None


def die(a: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
