"""The Future that ``Executor.submit`` returns: a real ``concurrent.futures.Future``.

It is also the task's sink, so the scheduler completes it in place: ``result()``,
``wait`` and ``as_completed`` (which use the future's condition and waiters, never its
callbacks) wake without a thread hop. State changes happen under the future's own
condition, in the stdlib's states and with the stdlib's waiter calls, so the module
functions of ``concurrent.futures`` see nothing unusual. Two things differ:

- ``cancel()`` works on a running call too: the engine stops the worker that holds it
  and starts another. A call never enters the RUNNING state; ``running()`` says
  whether a worker holds it.
- Done callbacks are kept here, not in the base class, so that a future completed by
  the scheduler runs them on the engine's callback thread (user code must never stall
  the scheduler). Completed any other way (a cancel, ``set_result``) it runs them in
  the completing thread, as the stdlib does.

**``result()`` right after ``submit``** (no timeout, no worker holds the call yet) has
the engine lend this thread an idle worker, as a blocking ``Pool.apply`` does
(``Backend.call_direct``): the waiting thread sends the call and reads the answer
itself, and the future completes the usual way.

**The condition is made on first use.** Most futures finish before anyone waits on
them, and making a ``threading.Condition`` (and entering it, and notifying it) costs
more than the rest of a submit. So the future starts without one; the ``_condition``
property makes it when something first needs it (``result()`` before the end,
``wait``, ``as_completed``, ``cancel``). Completing a future that has none yet happens
under ``_make_lock``, the lock that guards making one: whoever comes second finds
either the condition or the finished state, and a waiter can never miss a notify.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, TypeVar

from procpool._core.errors import for_executor

if TYPE_CHECKING:
    from procpool._core.backend import Backend
    from procpool._core.task import Task

T = TypeVar("T")

_log = logging.getLogger("concurrent.futures")
_OVER = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_CANCELLED = (CANCELLED, CANCELLED_AND_NOTIFIED)
# Guards making a future's condition, and completing a future that has none yet.
_make_lock = threading.Lock()
# The live set of a future made by hand: shared, never holds anything.
_NOBODY: set[Any] = set()


class Future(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running call."""

    def __init__(
        self, engine: Backend | None = None, live: set[Future[Any]] | None = None
    ) -> None:
        # The base's attributes, but not its __init__, which makes a Condition at once.
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks: list[Any] = []  # the base's list, unused: see _callbacks
        self._engine = engine  # None for a future made by hand, as Future()
        # The executor's unfinished futures (for cancel_futures).
        self._live = _NOBODY if live is None else live
        self._task: Task | None = None
        # The executor, while the call is pending: a future in use keeps it alive
        # (Executor(2).submit(f) must not shut the executor down under the call).
        self._owner: object = None
        self._callbacks: list[Callable[[Future[T]], object]] = []

    def cancel(self) -> bool:
        """Cancel the call, running or not; False only once it has finished.

        Unlike the stdlib (which cannot stop a running call), a running call's worker
        is stopped and replaced. A future made by hand (``Future()``, no call behind
        it) follows the stdlib's rules exactly.
        """
        if self._task is None:
            if not super().cancel():
                return False
            self._run_callbacks()
            return True
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            # Notified at once: the stdlib tells wait() and as_completed() about a
            # cancel only when its manager thread next looks at the call.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._live.discard(self)
        self._owner = None
        if self._engine is not None:
            self._engine.cancel(self._task)
        self._run_callbacks()
        return True

    @property
    def _condition(self) -> threading.Condition:
        cond = self._cond
        if cond is None:
            with _make_lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    @_condition.setter
    def _condition(self, cond: threading.Condition) -> None:
        self._cond = cond

    def done(self) -> bool:
        return self._state in _OVER

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def result(self, timeout: float | None = None) -> T:
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        try:
            if timeout is None:
                self._run_here()
            return super().result(timeout)
        finally:
            # As the stdlib: the error raised here would otherwise hold this frame,
            # and so the future, in a cycle through its own traceback (a future kept
            # alive keeps its executor's initargs, say, until the next gc).
            del self

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        if timeout is None:
            self._run_here()
        return super().exception(timeout)

    def _run_here(self) -> None:
        """``submit(f).result()``: if no worker has the call yet, run it on an idle one
        from this thread, as a blocking Pool.apply does (no thread hand-off)."""
        task = self._task
        if task is not None and self._state == PENDING and not task.attempts:
            assert self._engine is not None
            self._engine.call_direct(task, queued=True)

    def running(self) -> bool:
        """True while a worker holds the call (as in the stdlib, which counts calls
        already handed to its call queue as running)."""
        task = self._task
        if task is None:  # made by hand: the stdlib's RUNNING state
            return self._state == RUNNING
        return task.worker is not None and not self.done()

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        with self._condition:
            if self._state not in _OVER:
                self._callbacks.append(fn)
                return
        _call(fn, self)

    def set_result(self, result: T) -> None:
        if not self._complete(True, result):
            raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
        self._run_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._complete(False, exception):
            raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
        self._run_callbacks()

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        """The Sink side, called by the scheduler thread; loses quietly to a cancel."""
        if not ok:
            value = for_executor(value)
        if self._complete(ok, value) and self._callbacks:
            self._engine.callbacks.post(self._run_callbacks)  # type: ignore[union-attr]

    def _complete(self, ok: bool, value: Any) -> bool:
        """Finish with a result or an exception; False if already finished or cancelled."""
        if self._cond is None:
            with _make_lock:
                if self._cond is None:  # nobody waits, and nobody can until we are done
                    return self._finish(ok, value)
        with self._condition:
            if not self._finish(ok, value):
                return False
            for waiter in self._waiters:
                if ok:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            self._condition.notify_all()
        return True

    def _finish(self, ok: bool, value: Any) -> bool:
        """Store the outcome (under ``_make_lock`` or the future's condition)."""
        if self._state in _OVER:
            return False
        if ok:
            self._result = value
        else:
            self._exception = value
        self._state = FINISHED
        self._live.discard(self)
        self._owner = None
        return True

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _call(fn, self)


def _call(fn: Callable[[Any], object], future: Future[Any]) -> None:
    try:
        fn(future)
    except Exception:  # as concurrent.futures.Future._invoke_callbacks does
        _log.exception("exception calling callback for %r", future)
