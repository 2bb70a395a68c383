"""The scheduler's one wait: a poll set of descriptors, each with its handler.

Owner: the Watcher owns the ``select.poll`` object and the table of watched
descriptors (the wake pipe, each worker's result pipe and sentinel, and a task pipe
while a write to it is unfinished). Parts register and unregister through it; only
the scheduler thread waits on it (a borrowing caller, under the table lock, may
register a sentinel again, see lending).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from procpool._engine.slot import Slot

_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class Watcher:
    """poll() on the scheduler's descriptors, and a handler per descriptor."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, tuple[Callable[[Any], None], Slot | None]] = {}

    def watch(self, fd: int, handler: Callable[[Any], None], slot: Slot | None = None) -> None:
        """Call ``handler(slot)`` whenever ``fd`` is readable (or hung up)."""
        self._fds[fd] = (handler, slot)
        self._poll.register(fd, _POLL_IN)

    def unwatch(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._fds

    def table_view(self) -> dict[int, Any]:
        """The watched descriptors, to look at only (the lending hot path binds it)."""
        return self._fds

    def wait(self, timeout_ms: int | None) -> list[tuple[int, int]]:
        return self._poll.poll(timeout_ms)

    def handle(self, events: list[tuple[int, int]]) -> None:
        """Run the handler of each descriptor that has an event."""
        fds = self._fds
        for fd, _ in events:
            entry = fds.get(fd)
            if entry is not None:
                handler, slot = entry
                handler(slot)

    def flush(self, slot: Slot) -> None:
        """Write what the pipe takes of a worker's outbox; watch it for the rest."""
        if not slot.flush() and slot.task_fd not in self._fds:
            self._fds[slot.task_fd] = (self._on_writable, slot)
            self._poll.register(slot.task_fd, select.POLLOUT)

    def _on_writable(self, slot: Slot) -> None:
        if slot.flush():
            self.unwatch(slot.task_fd)

    def forget(self, slot: Slot) -> None:
        """Stop watching every descriptor of a worker (it is gone)."""
        self.unwatch(slot.result_fd)
        self.unwatch(slot.sentinel)
        self.unwatch(slot.task_fd)
