"""What a server does with the lines it reads: ``upper``, ``echo`` or a user's function.

A handler turns a block of complete lines (each ending in ``\\n``) into the bytes to
send back. ``upper`` and ``echo`` work on the whole block at once (``bytes.upper`` maps
ASCII letters only, so no input, invalid UTF-8 or NUL bytes included, can make it
raise). A user's ``MODULE:FUNCTION`` is called once a line, with the line's bytes
without its ``\\n`` or ``\\r\\n``; it returns ``bytes`` (or ``str``, sent as UTF-8, or
``None`` for no reply), and the reply ends the way the line did.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LineFunction = Callable[[bytes], Any]


class HandlerError(Exception):
    """A handler that cannot be loaded, or a reply that is not bytes, str or None."""


class Partial(Exception):
    """A function handler raised on a line: ``replies`` to the lines before it are
    still owed; ``__cause__`` is what it raised."""

    def __init__(self, replies: bytes) -> None:
        super().__init__("a handler raised")
        self.replies = replies


@dataclass(frozen=True, slots=True)
class Handler:
    """Replies to blocks of complete lines, and to a last line cut short by EOF."""

    name: str
    function: LineFunction | None = None  # None: the built-in ``name``

    def block(self, data: bytes) -> bytes:
        """The reply to ``data``: one or more lines, each ending in ``\\n``."""
        if self.function is None:
            return data.upper() if self.name == "upper" else data
        replies = []
        try:
            for line in data.split(b"\n")[:-1]:
                if line.endswith(b"\r"):
                    replies.append(self._one(line[:-1], b"\r\n"))
                else:
                    replies.append(self._one(line, b"\n"))
        except BaseException as exc:
            raise Partial(b"".join(replies)) from exc
        return b"".join(replies)

    def last(self, data: bytes) -> bytes:
        """The reply to a final line the peer ended with EOF rather than a newline."""
        if self.function is None:
            return data.upper() if self.name == "upper" else data
        return self._one(data, b"")

    def _one(self, line: bytes, end: bytes) -> bytes:
        assert self.function is not None
        reply = self.function(line)
        if reply is None:
            return b""
        if isinstance(reply, str):
            return reply.encode() + end
        if isinstance(reply, bytes | bytearray | memoryview):
            return bytes(reply) + end
        raise HandlerError(
            f"handler {self.name} returned {type(reply).__name__}; "
            "return bytes, str or None"
        )


BUILTIN = ("upper", "echo")


def load_handler(spec: str) -> Handler:
    """``upper``, ``echo`` or ``MODULE:FUNCTION`` (imported with the current directory
    on ``sys.path``, as ``python -m`` would)."""
    if spec in BUILTIN:
        return Handler(spec)
    return Handler(spec, load_function(spec, "--handler"))


def load_function(spec: str, option: str) -> Callable[..., Any]:
    """The callable ``MODULE:FUNCTION`` names, or a HandlerError saying what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(
            f"{option} {spec!r}: expected upper, echo or MODULE:FUNCTION"
            if option == "--handler" else f"{option} {spec!r}: expected MODULE:FUNCTION"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerError(f"{option} {spec!r}: cannot import {module_name}: {exc!r}")
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerError(f"{option} {spec!r}: {module_name} has no {attr}")
    if not callable(target):
        raise HandlerError(f"{option} {spec!r}: {attr} is not callable")
    return target  # type: ignore[no-any-return]
