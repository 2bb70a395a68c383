"""``pool.imap_stream(func, iterable)``: tasks that yield, their values as they come.

Each item is one task, ``func(item)``, which may be a generator (or return any
iterable): the worker sends each value the moment it is yielded (a PARTIAL frame on
the task's own pipe), and the :class:`StreamIterator` yields it in the parent at once,
in the order the values arrive from all the tasks. The input is read lazily, a window
of tasks ahead (512 per process, as ``imap``'s), so it may be endless. A task that
fails (an exception, a dead worker, its time limit) raises its error once, where it
comes in that order, after every value it had yielded; iteration then goes on with
the others. A streaming task is never retried: its values would come twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from procpool._core.errors import GetTimeoutError, for_pool
from procpool._core.task import Task
from procpool._worker import serialize
from procpool._worker.main import STREAM

if TYPE_CHECKING:
    from procpool._core.backend import Backend

T = TypeVar("T")


class StreamIterator(Generic[T]):
    """The values a pool's streaming tasks yield, as they are produced.

    The input is read lazily, in the consumer's thread: at most ``window`` tasks run
    or wait at once, and the next item is read when one of them ends (after the pool's
    ``close()``, a feeder thread reads the rest, as for ``imap``). ``next(timeout)``
    waits at most ``timeout`` seconds (``multiprocessing.TimeoutError`` after that);
    ``close()`` (or leaving a ``with`` block) stops the tasks still running.
    """

    def __init__(self, engine: Backend) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._values: deque[tuple[bool, Any]] = deque()
        self._left = 0  # tasks submitted and not finished
        self._closed = False
        self._running: dict[int, Task] = {}
        self._pool: object = None  # held until the input has ended and every task too
        self._source: Iterator[Any] = iter(())
        self._make: Callable[[int, Any], Task] | None = None
        self._window = 1
        self._refill = 1  # read more once this many of the window have ended
        self._read = 0  # items read from the input
        self._exhausted = True
        self._input_error: BaseException | None = None
        self._feed_lock = threading.Lock()  # one reader of the input at a time
        self._feeding = False  # a feeder thread reads the input (the pool was closed)

    # -- the sink side (the scheduler thread)

    def _partial(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._values.append((ok, value))
            self._cond.notify_all()

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if not ok:
                self._values.append((False, value))
            self._left -= 1
            self._running.pop(index, None)
            if self._exhausted and not self._left:
                self._pool = None
            self._cond.notify_all()

    def _start(
        self, pool: object, func: Callable[..., Any], iterable: Iterable[Any],
        options: tuple[float | None, int], window: int,
    ) -> None:
        """Read the first ``window`` items and submit them (``pool`` is held until the
        input has ended and every task has finished)."""
        fn_blob, name = serialize.function_info(func)

        def make(index: int, item: Any) -> Task:
            payload = serialize.call_payload(fn_blob, STREAM, (item,), {})
            return Task(payload, self, index, f"{name} on item {index}", options)

        self._make = make
        self._source = iter(iterable)
        self._window = window
        self._refill = max(1, window // 2)  # (one read and one submit per half window)
        self._exhausted = False
        self._pool = pool
        self._top_up(feeder=False)

    def _top_up(self, feeder: bool) -> None:
        """Read items and submit their tasks until ``window`` are in flight or the input
        ends; an error reading the input is raised by ``next()`` once the values of the
        tasks already submitted are out."""
        assert self._make is not None
        with self._feed_lock:
            if self._exhausted or self._closed:
                return
            with self._cond:
                room = self._window - self._left
            tasks = []
            try:
                for _ in range(room):
                    tasks.append(self._make(self._read, next(self._source)))
                    self._read += 1
            except StopIteration:
                self._exhausted = True
            except BaseException as exc:  # the input's own error, for the consumer
                self._exhausted = True
                self._input_error = exc
            with self._cond:
                self._left += len(tasks)
                self._running.update((task.index, task) for task in tasks)
            try:
                if tasks:
                    self._engine.submit(tasks, feeder=feeder)
            except BaseException as exc:  # the pool ended meanwhile
                with self._cond:
                    self._left -= len(tasks)
                    for task in tasks:
                        self._running.pop(task.index, None)
                    self._exhausted = True
                    self._input_error = self._input_error or exc
            with self._cond:
                if self._exhausted and not self._left:
                    self._pool = None
                self._cond.notify_all()

    def feed_rest(self) -> None:
        """The pool is closing: read the rest of the input in a feeder thread, so the
        values can still be consumed after ``close()``."""
        with self._feed_lock:
            if self._exhausted or self._closed or self._feeding:
                return
            self._feeding = True
        self._engine.start_feeder(self._feed_loop)

    def _feed_loop(self) -> None:
        while True:
            self._top_up(feeder=True)
            with self._cond:
                self._cond.wait_for(
                    lambda: self._exhausted or self._closed or self._left < self._window
                )
                if self._exhausted or self._closed:
                    return

    # -- the user side

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self.next()

    def next(self, timeout: float | None = None) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if self._room_to_read():
                    self._top_up(feeder=False)
                with self._cond:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not self._cond.wait_for(self._has_news, wait):
                        raise GetTimeoutError(f"no value within {timeout}s")
                    if self._closed:
                        raise StopIteration
                    if self._values:
                        ok, value = self._values.popleft()
                        break
                    if self._exhausted and not self._left:
                        error, self._input_error = self._input_error, None
                        if error is not None:
                            raise error
                        raise StopIteration
                    # else: a task ended and the input has more: read it, then wait
        except KeyboardInterrupt:
            self.close()
            raise
        if not ok:
            raise for_pool(value)
        return value  # type: ignore[no-any-return]

    def _has_news(self) -> bool:
        """(Under the lock.) A value, the end, or room for the consumer to read more."""
        return bool(
            self._values or self._closed or (self._exhausted and not self._left)
            or self._room_to_read()
        )  # fmt: skip

    def _room_to_read(self) -> bool:
        """Whether the consumer should read more input now (half the window is free)."""
        return (not self._exhausted and not self._feeding
                and self._window - self._left >= self._refill)  # fmt: skip

    def close(self) -> None:
        """Stop the tasks that have not finished; the iteration ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._cond:
            running = list(self._running.values())
        for task in running:
            if task.sink is self:  # not settled yet
                self._engine.cancel(task)
        self._pool = None

    def __enter__(self) -> StreamIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
