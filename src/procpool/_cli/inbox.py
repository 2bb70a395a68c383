"""A command's main loop's one wait: an inbox of events and a pipe that wakes it.

``procpool run`` and ``procpool fetch`` hand their main thread every piece of news
through :class:`Inbox`: their input reader thread, the pool's callback thread (run) or
the sessions' pump threads (fetch), and signals (``signal.set_wakeup_fd`` writes to the
same pipe). The main thread blocks in a single ``select`` on that pipe, with the
deadline of its nearest timer (a commit, a redraw, a retry), and nothing else: no
polling, no lock held across the wait, no exception raised at a random point.
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
    """Events for the main thread, with one wait: a pipe the posters write a byte to.

    Signals are delivered there too (``signal.set_wakeup_fd``); their Python handler
    only records the signal number, so they never interrupt the loop half-way. The pipe
    is never closed: a reader thread still blocked on stdin may post late, and must not
    write into a descriptor number that was reused.
    """

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
        """Block until an event or signal arrives, or ``timeout`` seconds pass."""
        if not self._events and not self.signal:
            select.select([self._r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        # Only now, with the pipe empty and before take(): a post from here on sees the
        # flag down and writes a byte. (Lowered before draining, a post in between
        # would have its byte drained, and the next post, seeing the flag still up,
        # would write none: a lost wake-up.)
        self._wake_pending = False

    def take(self) -> list[object]:
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """Turn SIGINT and SIGTERM into ``self.signal``; a second one stops at once."""

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
