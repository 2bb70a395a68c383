"""The unit of work a facade hands to a backend (:class:`Task`), and where its outcome
goes (:class:`Sink`).

A facade (Pool, Executor, imap) makes the Task and owns its sink; once submitted, only
the backend's scheduler changes the task, until it resolves the sink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Sink(Protocol):
    """Where a task's outcome goes: an AsyncResult, a map, an imap iterator, a Future."""

    def _resolve(self, index: int, ok: bool, value: Any) -> object: ...



class _Discard:
    """The sink of a task already resolved: later outcomes go nowhere."""

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        pass


DISCARD = _Discard()


# Task ids are multiples of this; the items of a batch answer as tid + 0, 1, 2, ...
TID_STEP = 1 << 16


class Task:
    """One call (or one chunk of a map) on its way through the pool.

    A *batch* (``items`` set) carries several one-item chunks of an imap in one
    frame; the worker runs and answers them one by one, as ``tid + offset``, and each
    is resolved at ``index + offset`` of the sink. ``answered`` items are done; the
    next one is the one running. ``remake(items)`` pickles a rest of the batch again
    (when a worker dies in the middle of it, or the batch is cut to share it out).
    A worker that dies before it has ``unpacked`` a batch may have died of any item's
    pickle: the items are then sent again one by one, and only the guilty one fails.
    """

    __slots__ = (
        "abandoned",
        "answered",
        "attempts",
        "fds",
        "index",
        "items",
        "name",
        "payload",
        "remake",
        "retries",
        "sent_at",
        "sink",
        "tid",
        "timeout",
        "unpacked",
        "worker",
    )

    def __init__(
        self, payload: bytes, sink: Sink, index: int, name: str, options: tuple[float | None, int]
    ) -> None:
        self.tid = 0
        self.payload = payload
        self.sink = sink
        self.index = index
        self.name = name
        self.timeout, self.retries = options
        self.attempts = 0
        self.sent_at = 0  # where its frame starts in its worker's task stream (bytes)
        self.abandoned = False  # its outcome no longer matters (cancelled, a failed map)
        self.worker: Any = None  # the engine's record of the worker that holds it
        self.fds: tuple[int, ...] = () if type(payload) is bytes else payload.fds  # type: ignore[attr-defined]
        self.items: list[Any] | None = None
        self.remake: Callable[[list[Any]], bytes] | None = None
        self.answered = 0
        self.unpacked = False  # the worker has unpickled this batch (UNPACKED)

    def part(self, start: int, stop: int | None = None) -> Task:
        """A new task for the items ``start:stop`` of this batch (one item: a plain call)."""
        assert self.items is not None and self.remake is not None
        items = self.items[start:stop]
        task = Task(self.remake(items), self.sink, self.index + start, self.name,
                    (self.timeout, self.retries))
        if len(items) > 1:
            task.items, task.remake = items, self.remake
        return task

    def release(self) -> None:
        """Close the memfds of a finished task (its large buffers; see OOBPayload)."""
        if self.fds:
            self.fds = ()
            self.payload.release()  # type: ignore[attr-defined]

