"""Handlers and worker initializers for `procpool serve --handler tests_mod:func` tests.

They run in the server's workers; they report nothing back except through replies.
"""

from __future__ import annotations

import os
import threading


def shout(line: bytes) -> str:
    """A str reply (sent as UTF-8): the line decoded leniently, upper-cased, with '!'."""
    return line.decode(errors="replace").upper() + "!"


def moody(line: bytes) -> bytes | None:
    """b"boom" raises; b"exit" raises SystemExit; b"hang" never returns (an event no one
    sets); b"pid" tells the worker's pid; b"quiet" sends no reply; else the line."""
    if line == b"boom":
        raise ValueError("boom requested")
    if line == b"exit":
        raise SystemExit(3)
    if line == b"hang":
        threading.Event().wait()
    if line == b"pid":
        return str(os.getpid()).encode()
    if line == b"quiet":
        return None
    return line


def not_bytes(line: bytes) -> int:
    return len(line)


def failing_init() -> None:
    raise RuntimeError("cannot open the database (on purpose)")


NOT_CALLABLE = 42
