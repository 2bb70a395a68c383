"""The main loop's one wait: events posted by other threads, and a pipe that wakes it.

The pool's callback thread (batches done or failed) and the input reader post here;
SIGINT and SIGTERM arrive on the same pipe (``signal.set_wakeup_fd``), and their
handler only records the signal. The main thread blocks in one ``select`` with the
deadline of the nearest timer (a retry, a host's rate, the next commit): no polling.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections import deque
from collections.abc import Iterator
from types import FrameType


class Inbox:
    def __init__(self) -> None:
        self._events: deque[object] = deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._wake_pending = False
        self.signal = 0

    def post(self, event: object) -> None:
        """Add an event and wake the main thread (any thread)."""
        self._events.append(event)
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._w, b"\0")

    def wait(self, timeout: float | None) -> None:
        if not self._events and not self.signal:
            select.select([self._r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        # Lowered only once the pipe is drained and before take(): a post from here on
        # writes a byte again, so no wake-up is lost.
        self._wake_pending = False

    def take(self) -> list[object]:
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def close(self) -> None:
        """Close the pipe (only once no other thread can post)."""
        os.close(self._r)
        os.close(self._w)

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set ``self.signal``; a second one raises KeyboardInterrupt."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.signal:
                raise KeyboardInterrupt
            self.signal = signum

        old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, previous in old.items():
                signal.signal(signum, previous)
            signal.set_wakeup_fd(old_fd)
