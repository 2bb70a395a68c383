"""Inputs of ``procpool run``: the lines of a file or stdin, or the integers of ``--range``.

A reader thread turns raw input into :class:`Item` batches and posts them to the main
loop, never more than a couple of batches ahead (backpressure), so an endless or slow
stdin works and memory stays flat. It reads raw blocks (``os.read``) rather than lines,
so a batch is whatever is available: a file gives large batches, while a slow
producer's single line is handed on at once instead of waiting for a full batch.

Each input is keyed by its line number and the sha256 of its bytes; the key is what
resume compares, so an edited line is rerun and an unchanged one is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from procpool._cli.run.target import CallError

_BLOCK = 1 << 16
_RANGE_BATCH = 1024
_HEAD_BYTES = 1 << 16


@dataclass(slots=True)
class Item:
    """One input: its key (``line``, ``sha``), its text, and what the function receives.

    ``call`` is the single argument, or an ``(args, kwargs)`` pair in ``--json`` mode.
    ``error`` is set when the input itself is bad (invalid JSON or UTF-8): it is
    stored as failed without running. ``attempts`` counts this run's attempts,
    ``prior_attempts`` those of earlier runs (for ``--retry-failed``).
    """

    line: int
    sha: str
    text: str
    call: Any
    error: CallError | None = None
    prior_attempts: int = 0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class InputBatch:
    items: list[Item]


@dataclass(frozen=True, slots=True)
class InputTotal:
    """The number of inputs, when it can be known up front (a file or ``--range``)."""

    count: int


@dataclass(frozen=True, slots=True)
class InputEnd:
    """No more input: ``error`` is None at a clean end, else why reading stopped."""

    error: str | None


class InputError(Exception):
    """The input cannot be opened or read."""


class Source:
    """Where the inputs come from. Opened up front so an unreadable file fails early."""

    def __init__(self, label: str, fd: int | None, range_n: int | None, json_mode: bool) -> None:
        self.label = label
        self._fd = fd
        self._range_n = range_n
        self._json = json_mode

    @classmethod
    def open(cls, path: str | None, range_n: int | None, json_mode: bool) -> Source:
        """A file path, ``-`` for stdin, or ``range_n`` for the integers 0..N-1."""
        if range_n is not None:
            return cls(f"range:{range_n}", None, range_n, json_mode)
        if path is None or path == "-":
            return cls("-", 0, None, json_mode)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise InputError(f"cannot read the input file {path}: {exc.strerror}") from None
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"cannot read the input file {path}: it is a directory")
        return cls(os.path.abspath(path), fd, None, json_mode)

    def fingerprint(self) -> str:
        """Identity of the input as a whole (only reported; resume compares line keys)."""
        if self._fd is None:
            return self.label
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            return "stream"
        head = hashlib.sha256(os.pread(self._fd, _HEAD_BYTES, 0)).hexdigest()[:16]
        return f"size={st.st_size} mtime_ns={st.st_mtime_ns} head={head}"

    def count(self) -> int | None:
        """How many inputs there are, if that can be known without consuming them."""
        if self._range_n is not None:
            return self._range_n
        assert self._fd is not None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            return None
        lines, offset, last = 0, 0, b"\n"
        while block := os.pread(self._fd, 1 << 20, offset):
            lines += block.count(b"\n")
            offset += len(block)
            last = block[-1:]
        return lines + (last != b"\n")

    def batches(self) -> Iterator[list[Item]]:
        if self._range_n is not None:
            return _range_batches(self._range_n)
        assert self._fd is not None
        return _line_batches(self._fd, self._json)

    def close(self) -> None:
        if self._fd is not None and self._fd != 0:
            os.close(self._fd)
            self._fd = None


def _range_batches(n: int) -> Iterator[list[Item]]:
    sha256 = hashlib.sha256
    for start in range(0, n, _RANGE_BATCH):
        yield [
            Item(i + 1, sha256(str(i).encode()).hexdigest(), str(i), i)
            for i in range(start, min(n, start + _RANGE_BATCH))
        ]


def _line_batches(fd: int, json_mode: bool) -> Iterator[list[Item]]:
    make = _json_item if json_mode else _text_item
    line_no = 0
    rest = b""
    while block := os.read(fd, _BLOCK):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        if lines:
            yield [make(line_no + i, raw) for i, raw in enumerate(lines, 1)]
            line_no += len(lines)
    if rest:
        yield [make(line_no + 1, rest)]


def _text_item(line: int, raw: bytes) -> Item:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        message = f"line {line} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        error = CallError("UnicodeDecodeError", message, "")
        return Item(line, sha, raw.decode(errors="backslashreplace"), None, error)
    return Item(line, sha, text, text)


def _json_item(line: int, raw: bytes) -> Item:
    item = _text_item(line, raw)
    if item.error is not None:
        return item
    try:
        value = json.loads(item.text)
    except ValueError as exc:
        item.error = CallError("JSONDecodeError", f"line {line} is not valid JSON: {exc}", "")
        return item
    item.call = as_call(value)
    return item


def as_call(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A decoded JSON line as a call: a list is positional args, an object keywords."""
    if isinstance(value, list):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), value
    return (value,), {}


class Reader:
    """The thread that reads the input and posts InputTotal, InputBatch..., InputEnd."""

    def __init__(self, source: Source, post: Callable[[object], None], ahead: int = 2) -> None:
        self._source = source
        self._post = post
        self._permits = threading.Semaphore(ahead)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="procpool-run-input", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def consumed(self) -> None:
        """The main loop has taken a batch out of the way: one more may be read."""
        self._permits.release()

    def stop(self) -> None:
        """Read no more (a thread blocked on a silent stdin stays until the exit)."""
        self._stopped = True
        self._permits.release()

    def _run(self) -> None:
        try:
            total = self._source.count()
            if total is not None:
                self._post(InputTotal(total))
            for batch in self._source.batches():
                self._permits.acquire()
                if self._stopped:
                    return
                self._post(InputBatch(batch))
        except OSError as exc:
            self._post(InputEnd(f"cannot read {self._source.label}: {exc.strerror or exc}"))
            return
        except Exception as exc:  # the main loop must hear of the end, whatever it is
            self._post(InputEnd(f"cannot read {self._source.label}: {exc!r}"))
            return
        finally:
            self._source.close()
        self._post(InputEnd(None))
