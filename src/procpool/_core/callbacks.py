"""The callback thread: runs user callbacks in completion order, off the scheduler."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("procpool")


class CallbackRunner:
    """A thread that runs user callbacks in order, so they never block the scheduler."""

    def __init__(self) -> None:
        self._queue: deque[Callable[[], None] | None] = deque()
        self._ready = threading.Semaphore(0)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, fn: Callable[[], None]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="procpool-callbacks", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError:
                        # At interpreter exit Python 3.12+ starts no new thread: with
                        # none started, nothing is queued, so running it here keeps
                        # the order.
                        fn()
                        return
                    # Published once started: stop() joins it, and joining a thread
                    # that never started raises.
                    self._thread = thread
        self._queue.append(fn)
        self._ready.release()

    def _run(self) -> None:
        while True:
            self._ready.acquire()
            fn = self._queue.popleft()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # a bug in procpool's own wrapper; keep serving
                log.exception("procpool callback thread error")

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        """Run what is queued, then end the thread (a no-op from the thread itself)."""
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        self._queue.append(None)
        self._ready.release()
        thread.join()
