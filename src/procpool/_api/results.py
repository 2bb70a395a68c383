"""Result handles: AsyncResult (one call) and MapResult (a whole map); IMapIterator is
in ``_imap``.

They match ``multiprocessing.pool.AsyncResult``/``MapResult``/``IMapIterator`` and add
``cancel()``, ``cancelled()``, ``await`` and a clean Ctrl-C: a KeyboardInterrupt that
interrupts ``get``/``wait``/iteration cancels the tasks the caller was waiting for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from procpool._api.options import check_callable, task_options
from procpool._core.errors import CancelledError, GetTimeoutError, for_pool
from procpool._core.task import Task
from procpool._worker import serialize
from procpool._worker.main import APPLY

if TYPE_CHECKING:
    from procpool._core.backend import Backend

T = TypeVar("T")
log = logging.getLogger("procpool")

# Guards the pending -> done transition of every handle: the scheduler resolves,
# user threads cancel, and exactly one of them wins.
_lock = threading.Lock()


class AsyncResult(Task, Generic[T]):
    """The outcome of ``apply_async`` (and base of ``MapResult``).

    The handle of an ``apply_async`` is also the task the scheduler moves, as an
    asyncio Task is its own Future: one object made (and tracked by the cyclic GC) per
    call instead of three (a handle, a task, the handle's list of tasks). Pool fills
    in its Task fields (Task.__init__). A MapResult is no task itself: it holds the
    tasks of its chunks.
    """

    __slots__ = (
        "__weakref__",
        "_callback",
        "_done",
        "_engine",
        "_error_callback",
        "_gate",
        "_hooks",
        "_ok",
        "_pool",
        "_ready",
        "_value",
        "callback_error",
    )

    def __init__(
        self,
        engine: Backend,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._engine = engine
        # The Pool that made this handle, held until it settles (see _hold).
        self._pool: object = None
        # A lock held until the result is ready, made only when somebody has to wait
        # for it: cheaper than an Event (a Condition and two locks), and most results
        # of a large batch are ready before anyone asks.
        self._gate: threading.Lock | None = None
        self._ready = False
        self._callback = callback
        self._error_callback = error_callback
        self._done = False
        self._ok = False
        self._value: Any = None
        self._hooks: list[Callable[[AsyncResult[T]], None]] | None = None
        #: The exception a callback raised, if one did (it is also logged).
        self.callback_error: BaseException | None = None

    def ready(self) -> bool:
        """True once the result (or error) is available and its callback has run."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call returned without raising; ValueError if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready or ``timeout`` seconds pass."""
        if self._ready:
            return
        with _lock:
            if self._ready:
                return
            gate = self._gate
            if gate is None:
                gate = self._gate = threading.Lock()
                gate.acquire()
        try:
            if timeout is None:
                acquired = gate.acquire()
            else:
                acquired = gate.acquire(timeout=max(0.0, timeout))
            if acquired:
                gate.release()  # let any other waiter through too
        except KeyboardInterrupt:
            self.cancel()
            raise

    def get(self, timeout: float | None = None) -> T:
        """The call's return value; re-raises its exception (worker traceback as cause).

        Raises GetTimeoutError (a ``multiprocessing.TimeoutError`` and a ``TimeoutError``)
        when ``timeout`` passes first; the task itself keeps running.
        """
        if not self._ready:  # (most handles of a large batch are ready when asked)
            self.wait(timeout)
            if not self._ready:
                raise GetTimeoutError(f"no result within {timeout}s (the task is still running)")
        if self._ok:
            value: T = self._value
            return value
        raise self._value

    def cancel(self) -> bool:
        """Stop the task: drop it if queued, kill and replace its worker if running.

        True when the task will not complete (``get`` then raises CancelledError);
        False when it had already finished.
        """
        if not self._set(False, CancelledError("the task was cancelled")):
            return False
        self._stop()
        return True

    def _stop(self) -> None:
        """Have the scheduler stop what runs for this handle (see cancel)."""
        self._engine.cancel(self)

    def cancelled(self) -> bool:
        return self._done and isinstance(self._value, CancelledError) and not self._ok

    def __await__(self) -> Generator[Any, None, T]:
        """``await result`` in asyncio; cancelling the awaiting task cancels this one."""
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def wake(_: AsyncResult[T]) -> None:
            loop.call_soon_threadsafe(_set_future_done, future)

        self._add_hook(wake)
        try:
            yield from future.__await__()
        except asyncio.CancelledError:
            self.cancel()
            raise
        return self.get()

    # -- internal

    def _add_hook(self, hook: Callable[[AsyncResult[T]], None]) -> None:
        """Call ``hook(self)`` once ready (at once if it already is)."""
        with _lock:
            if not self._ready:
                if self._hooks is None:
                    self._hooks = []
                self._hooks.append(hook)
                return
        hook(self)

    def _hold(self, pool: object) -> None:
        """Keep ``pool`` alive until this handle settles, as the stdlib's
        ``ApplyResult._pool`` does: ``Pool(2).apply_async(f).get()`` must not see the
        pool finalized (its workers stopped) while the call is pending."""
        self._pool = pool

    def _set(self, ok: bool, value: Any) -> bool:
        """Settle the handle (the first of the scheduler and cancel() wins)."""
        return AsyncResult._resolve(self, 0, ok, value)

    def _resolve(self, index: int, ok: bool, value: Any) -> bool:
        """The Sink side (see procpool._core.task.Sink); True when this outcome settled the handle.

        It is also _set's body: it runs once per apply_async, and a call costs.
        """
        if not ok:
            value = for_pool(value)
        with _lock:
            if self._done:
                return False
            self._done = True
            self._ok = ok
            self._value = value
            callback = self._callback if ok else self._error_callback
            if callback is None:
                # No callback: ready at once, under the same lock (the common case).
                self._ready = True
                if self._gate is not None:
                    self._gate.release()
                hooks, self._hooks = self._hooks, None
        # Let go of the pool outside the lock: this may have been its last reference,
        # and its finalizer stops the engine.
        self._pool = None
        if callback is not None:
            self._engine.callbacks.post(self._run_callback)
        elif hooks:
            _run_hooks(self, hooks)
        return True

    def _run_callback(self) -> None:
        callback = self._callback if self._ok else self._error_callback
        try:
            callback(self._value)  # type: ignore[misc]
        except BaseException as exc:
            self.callback_error = exc
            log.exception("procpool: a %s raised", "callback" if self._ok else "error_callback")
        finally:
            self._mark_ready()

    def _mark_ready(self) -> None:
        with _lock:
            self._ready = True
            if self._gate is not None:
                self._gate.release()
            hooks, self._hooks = self._hooks, None
        if hooks:
            _run_hooks(self, hooks)


def _run_hooks(result: AsyncResult[Any], hooks: list[Callable[[AsyncResult[Any]], None]]) -> None:
    for hook in hooks:
        try:
            hook(result)
        except BaseException:
            log.exception("procpool: a completion hook raised")


def _set_future_done(future: Any) -> None:
    if not future.done():
        future.set_result(None)


ApplyResult = AsyncResult


class MapResult(AsyncResult[list[T]]):
    """The outcome of ``map_async``: one list, or the first error of any chunk."""

    def __init__(
        self,
        engine: Backend,
        bounds: list[tuple[int, int]],
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        super().__init__(engine, callback, error_callback)
        self._bounds = bounds
        self._items: list[Any] = [None] * (bounds[-1][1] if bounds else 0)
        self._remaining = len(bounds)
        self._first_error: BaseException | None = None
        self._tasks: list[Task] = []
        # The Pool, held while any chunk is still to come back (see _hold): after a
        # failure the other chunks still run, as in the stdlib.
        self._map_pool: object = None
        self.progress = threading.Condition(threading.Lock())
        self.completed = 0
        if not bounds:
            self._set(True, [])

    def _resolve(self, index: int, ok: bool, value: Any) -> bool:
        if ok:
            start, stop = self._bounds[index]
            self._items[start:stop] = value
        with self.progress:
            if ok:
                self.completed += stop - start
            elif self._first_error is None:
                self._first_error = value
            self._remaining -= 1
            last = self._remaining == 0
        # As the stdlib: after a failure the other chunks still run (their side
        # effects happen), and the map is ready, with its first error, once every
        # chunk is back: `with Pool() as p: p.map(...)` does not terminate them.
        settled = False
        if last:
            if self._first_error is None:
                settled = self._set(True, self._items)
            else:
                settled = self._set(False, self._first_error)
            self._map_pool = None
        self._notify_progress()
        return settled

    def _hold(self, pool: object) -> None:
        self._map_pool = pool

    def _stop(self) -> None:
        for task in self._tasks:
            self._engine.cancel(task)

    def cancel(self) -> bool:
        cancelled = super().cancel()
        self._map_pool = None
        self._notify_progress()
        return cancelled

    def _notify_progress(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def wait_progress(self, shown: int) -> int | None:
        """Block until more than ``shown`` items are done; None once the map is over."""
        with self.progress:
            while self.completed == shown and not self._done:
                self.progress.wait()
            return None if self._done else self.completed


def submit_chunks(
    engine: Backend,
    result: MapResult[Any],
    fn_blob: bytes,
    name: str,
    mode: int,
    items: Sequence[Any],
    bounds: list[tuple[int, int]],
    options: tuple[float | None, int],
    processes: int,
) -> None:
    """Pickle a map's chunks and submit them, as they are pickled: workers start on
    the first ones while the rest of the input is still being pickled here."""
    batch: list[Task] = []
    try:
        for index, (start, stop) in enumerate(bounds):
            try:
                payload = serialize.call_payload(fn_blob, mode, items[start:stop], {})
            except Exception as exc:  # as the stdlib: that chunk fails, the rest runs
                result._resolve(index, False, exc)
            else:
                label = f"{name} on items {start}..{stop - 1}"
                batch.append(Task(payload, result, index, label, options))
            if index < processes or len(batch) >= 8 or stop == len(items):
                result._tasks.extend(batch)
                engine.submit(batch)
                batch = []
    except BaseException:
        result.cancel()
        raise


class Unpicklable(Exception):
    """A call that could not be pickled: ``result`` already holds the error."""

    def __init__(self, result: AsyncResult[Any]) -> None:
        self.result = result


_NO_KWARGS: dict[str, Any] = {}  # (only ever pickled)


def apply_result(
    engine: Backend,
    holder: object,
    defaults: tuple[float | None, int],
    func: Callable[..., T],
    args: Iterable[Any],
    kwds: Mapping[str, Any] | None,
    callback: Callable[[T], object] | None,
    error_callback: Callable[[BaseException], object] | None,
    task_timeout: float | None = None,
    retries: int | None = None,
) -> AsyncResult[T]:
    """The handle of one ``apply``/``apply_async`` call, which is its own Task (it
    holds ``holder``, the pool, until it is settled). Raises Unpicklable with a failed
    handle when the call cannot be pickled: as in the stdlib, get() raises that."""
    if not callable(func) or callback is not None or error_callback is not None:
        check_callable(func, callback, error_callback)
    if type(args) is not tuple:
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise TypeError(
                f"args must be a tuple of arguments, not {type(args).__name__}; "
                f"for one argument write args=(x,)"
            )
        args = tuple(args)
    try:
        fn_part, name = serialize.function_info(func)
        payload = serialize.call_payload(fn_part, APPLY, args, dict(kwds) if kwds else _NO_KWARGS)
    except Exception as exc:  # as the stdlib: get() raises it, not apply_async
        failed: AsyncResult[T] = AsyncResult(engine, callback, error_callback)
        failed._set(False, exc)
        raise Unpicklable(failed) from None
    options = defaults
    if task_timeout is not None or retries is not None:
        options = task_options(defaults, task_timeout, retries)
    result: AsyncResult[T] = AsyncResult(engine, callback, error_callback)
    result._hold(holder)
    Task.__init__(result, payload, result, 0, name, options)  # its own task
    return result
