"""What becomes of a Pool or an Executor that is dropped, or still open at exit."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from procpool._core.backend import Backend

if TYPE_CHECKING:
    from procpool._api.executor import Executor


def shutdown_pool(engine: Backend) -> None:
    """Finalizer of a Pool that was dropped or left open at exit."""
    if os.getpid() != engine.owner_pid:
        return  # a forked worker collecting its copy of the pool: not ours to stop
    engine.terminate()
    if not engine.owns_current_thread():
        engine.join(timeout=5)
        return
    # Its last result was just settled by the scheduler or the callback thread, which
    # cannot wait for itself: a thread of its own waits for the engine to end.
    try:
        threading.Thread(target=engine.join, name="procpool-pool-finalizer").start()
    except RuntimeError:  # interpreter shutdown: no new threads (Python 3.12+)
        pass


class FinishAtExit:
    """Let open executors finish their work before the interpreter exits.

    As the stdlib does (its manager threads are joined at exit): runs from
    ``threading``'s exit hooks, before non-daemon threads are joined. A forked child
    inherits the hook and the set, but not the executors: the pid check skips them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[Executor] = weakref.WeakSet()
        self._pid: int | None = None

    def remember(self, executor: Executor) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._open.clear()
                register = getattr(threading, "_register_atexit", None)
                if register is not None:  # private, but what concurrent.futures uses
                    try:
                        register(self)
                    except RuntimeError:  # already exiting: nothing to wait for then
                        pass
            self._open.add(executor)

    def __call__(self) -> None:
        if self._pid != os.getpid():
            return
        for executor in list(self._open):
            executor.shutdown(wait=True)


finish_at_exit = FinishAtExit()


def release_executor(engine: Backend) -> None:
    """Finalizer of an Executor dropped without ``shutdown()``: finish, then end."""
    if os.getpid() != engine.owner_pid:
        return  # a forked worker collecting its copy of the executor
    engine.close()
    try:
        threading.Thread(target=engine.join, name="procpool-executor-shutdown").start()
    except RuntimeError:  # interpreter shutdown: no new threads (Python 3.12+)
        engine.join()
