"""The prefork server's shared page: who is serving, and since when a handler runs.

One anonymous shared mapping, made by the supervisor before it forks, so every worker
sees the same bytes. Each worker thread owns one slot and is its only writer:

    [limit: int64] [active: one byte a slot] [busy since: one double a slot]

``active`` is how ``--max-connections`` holds across processes without a lock: a thread
marks its slot, then counts the marks, and backs out (the client gets ``ERR busy``) if
the count passed the limit; two that race both back out, never both in. ``busy since``
is the monotonic time a handler call began (0 when none runs), read by the supervisor
to stop a worker stuck past ``--handler-timeout``. The supervisor writes ``limit`` and
clears a dead worker's slots.
"""

from __future__ import annotations

import mmap
import struct

MAX_WORKERS = 256
_LIMIT = struct.Struct("q")
_SINCE = struct.Struct("d")


class Board:
    def __init__(self, threads_per_worker: int) -> None:
        self.per_worker = threads_per_worker
        self.slots = MAX_WORKERS * threads_per_worker
        self._active = _LIMIT.size
        self._since = self._active + self.slots + (-self.slots % 8)
        self.map = mmap.mmap(-1, self._since + _SINCE.size * self.slots)

    def slot(self, worker: int, thread: int) -> int:
        return worker * self.per_worker + thread

    # -- the supervisor

    def set_limit(self, limit: int) -> None:
        _LIMIT.pack_into(self.map, 0, limit)

    def clear_worker(self, worker: int) -> None:
        first = self.slot(worker, 0)
        for slot in range(first, first + self.per_worker):
            self.map[self._active + slot] = 0
            _SINCE.pack_into(self.map, self._since + _SINCE.size * slot, 0.0)

    def stuck_since(self, worker: int) -> float:
        """The earliest start of a handler call still running in ``worker`` (0: none)."""
        first = self.slot(worker, 0)
        starts = [
            _SINCE.unpack_from(self.map, self._since + _SINCE.size * slot)[0]
            for slot in range(first, first + self.per_worker)
        ]
        running = [t for t in starts if t > 0]
        return min(running) if running else 0.0

    # -- a worker thread, on its own slot

    def enter(self, slot: int) -> bool:
        """Mark ``slot`` serving; False (and unmarked) if that passes the limit."""
        self.map[self._active + slot] = 1
        active = self.map[self._active : self._active + self.slots].count(1)
        if active > _LIMIT.unpack_from(self.map, 0)[0]:
            self.map[self._active + slot] = 0
            return False
        return True

    def leave(self, slot: int) -> None:
        self.map[self._active + slot] = 0

    def busy(self, slot: int, since: float) -> None:
        _SINCE.pack_into(self.map, self._since + _SINCE.size * slot, since)
