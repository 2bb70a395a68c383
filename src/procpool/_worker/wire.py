"""The frames that cross a worker's pipes.

Every message is one frame: a fixed 13-byte header followed by ``size`` payload bytes::

    +----------------+---------+------------------+-------------------+
    | size: uint32   | kind: u8| task id: uint64  | payload (size B)  |
    +----------------+---------+------------------+-------------------+

The header is a :class:`struct.Struct` rather than a pickled dataclass because it is
on the per-task hot path: packing three integers costs a fraction of pickling an
object, and the payload (already pickled once, by the submitting thread) is never
pickled again. ``benchmarks/bench_wire.py`` measures the difference.

Parent to worker: ``CALL`` (payload: a pickled call), ``CANCEL`` (drop a queued call),
``STOP`` (exit when idle), ``CALL_WAITED`` (a CALL whose caller is blocked on the
answer: after answering, the worker watches its pipe for a moment before sleeping,
since such a caller usually sends the next call at once). ``CALL_OOB`` and
``RESULT_OOB`` carry a call or result whose large buffers travel as memfd descriptors
on a Unix socket beside the pipe (``_shm``); their payload starts with the number of
descriptors.

Worker to parent: ``READY`` (initializer done), ``RESULT``, ``ERROR`` (payload:
:class:`ErrorReport`), ``CANCELLED`` (a queued call was dropped), ``RETIRE`` (the worker
leaves after this task), ``INIT_FAILED`` (payload: traceback text).
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<IBQ")
HEADER_SIZE = HEADER.size
# The payload of a CUT: the offset of the first item not run, and 1 when the batch
# could not even be unpickled (the parent then sends its items one by one).
CUT = struct.Struct("<IB")
# A received frame's payload (see FrameReader.frames).
Payload = bytes | bytearray
_READ_SIZE = 1 << 16
_MAX_READ = 1 << 20  # a pipe holds at most this much (see procpool._engine.pipes.widen)


class Kind(enum.IntEnum):
    CALL = 1
    CANCEL = 2
    STOP = 3
    READY = 10
    RESULT = 11
    ERROR = 12
    CANCELLED = 13
    RETIRE = 14
    INIT_FAILED = 15
    CALL_OOB = 4  # a CALL whose large buffers come on the descriptor socket
    CALL_WAITED = 5  # a CALL whose caller is blocked on the answer (Engine.call_direct)
    CALL_ITEMS = 6  # a batch: run each item as its own call, answer each as tid + offset
    RESULT_OOB = 16  # likewise for a RESULT
    CUT = 17  # a batch was cut short (asked by CANCEL); payload: the first item not run
    UNPACKED = 18  # a batch was unpickled: a death from now on is its running item's
    PARTIAL = 19  # one value a streaming call yielded (its RESULT comes at the end)


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """A worker-side exception, in a form that always pickles.

    ``exc`` holds the pickled exception (None when it could not be pickled), so the
    parent can fall back to ``type_name`` and ``message`` when it cannot rebuild it.
    """

    exc: bytes | None
    type_name: str
    message: str
    traceback: str
    #: The repr of a result that could not be pickled (this exception is why), for a
    #: Pool's MaybeEncodingError; None for an error the call raised.
    unsent: str | None = None


def frame(kind: int, tid: int, payload: bytes = b"") -> bytes:
    """One encoded frame."""
    return HEADER.pack(len(payload), kind, tid) + payload


class FrameReader:
    """Splits a byte stream into ``(kind, tid, payload)`` frames.

    Reads are large (64 KiB, or the rest of a large frame) so that one system call can
    deliver many small results at once.
    """

    __slots__ = ("_buf", "_fd", "_pos")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._pos = 0

    def fill(self) -> bool:
        """Read what the pipe has (one read). False at end of file.

        Raises BlockingIOError on a non-blocking descriptor with nothing to read.
        """
        want = _READ_SIZE
        buf = self._buf
        if len(buf) - self._pos >= HEADER_SIZE:
            (size,) = struct.unpack_from("<I", buf, self._pos)
            want = min(_MAX_READ, max(want, size + HEADER_SIZE - (len(buf) - self._pos)))
        data = os.read(self._fd, want)
        if not data:
            return False
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        buf += data
        return True

    def frames(self) -> list[tuple[int, int, bytearray]]:
        """Take every complete frame buffered so far.

        A list made in one loop, not a generator: this runs once per task on both
        sides of the pipe, and resuming a generator costs more than the parsing.
        Payloads are copies (a bytearray slice copies once; a memoryview would pin the
        buffer).
        """
        buf = self._buf
        pos = self._pos
        have = len(buf)
        unpack = HEADER.unpack_from
        out = []
        while have - pos >= HEADER_SIZE:
            size, kind, tid = unpack(buf, pos)
            start = pos + HEADER_SIZE
            end = start + size
            if end > have:
                break
            out.append((kind, tid, buf[start:end]))
            pos = end
        self._pos = pos
        return out

    def pending(self) -> bool:
        """True when a complete frame is buffered."""
        avail = len(self._buf) - self._pos
        if avail < HEADER_SIZE:
            return False
        size: int = struct.unpack_from("<I", self._buf, self._pos)[0]
        return avail >= HEADER_SIZE + size


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write everything to a blocking descriptor."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
