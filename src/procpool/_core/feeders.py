"""The input threads of a backend's imaps, and the rule for refusing new work.

Both backends (the engine's :class:`~procpool._engine.inbox.Inbox` and the Dask
backend) keep the same books: an ``imap`` reads its input in a *feeder* thread, which
may go on submitting after ``close()`` (as the stdlib's task thread does), and the
pool winds down only once every feeder has returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from procpool._core.errors import fresh_copy
from procpool._core.state import State


class Feeders:
    """The feeder threads; ``count`` is read and changed under the backend's ``lock``."""

    def __init__(self, lock: threading.Lock, wake: Callable[[], None]) -> None:
        self._lock = lock
        self._wake = wake
        self.count = 0
        self.threads: list[threading.Thread] = []

    def start(self, feed: Callable[[], None]) -> None:
        """Run ``feed`` (which submits with ``feeder=True``) in a thread."""
        with self._lock:
            self.count += 1
        thread = threading.Thread(target=self._run, args=(feed,), daemon=True,
                                  name="procpool-imap-feeder")  # fmt: skip
        self.threads.append(thread)
        thread.start()

    def _run(self, feed: Callable[[], None]) -> None:
        try:
            feed()
        finally:
            with self._lock:
                self.count -= 1
            self._wake()

    def join(self, timeout: float | None) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def refuse(self, state: State, feeder: bool) -> bool:
        """Whether a submit must be refused (call under the lock): only a running pool
        takes work, and a closing one from its feeders while any is still reading."""
        return state is not State.RUNNING and not (
            feeder and state is State.CLOSING and self.count
        )


def not_running_error(state: State, broken: BaseException | None) -> BaseException:
    """What a submit to a pool that no longer runs raises."""
    if state is State.BROKEN and broken is not None:
        return fresh_copy(broken)
    return ValueError("Pool not running")
