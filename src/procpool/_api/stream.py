"""``pool.imap_stream(func, iterable)``: tasks that yield, their values as they come.

Each item is one task, ``func(item)``, which may be a generator (or return any
iterable): the worker sends each value the moment it is yielded (a PARTIAL frame on
the task's own pipe), and the :class:`StreamIterator` yields it in the parent at once,
in the order the values arrive from all the tasks. A task that fails (an exception, a
dead worker, its time limit) raises its error once, where it comes in that order,
after every value it had yielded; iteration then goes on with the others. A streaming
task is never retried: its values would come twice.
"""

from __future__ import annotations

import threading
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

    ``next(timeout)`` waits at most ``timeout`` seconds (``multiprocessing.TimeoutError``
    after that); ``close()`` (or leaving a ``with`` block) stops the tasks still running.
    """

    def __init__(self, engine: Backend) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._values: deque[tuple[bool, Any]] = deque()
        self._left = 0
        self._closed = False
        self._tasks: list[Task] = []
        self._pool: object = None  # held until every task has finished

    # -- the sink side (the scheduler thread)

    def _partial(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._values.append((ok, value))
            self._cond.notify()

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if not ok:
                self._values.append((False, value))
            self._left -= 1
            if not self._left:
                self._pool = None
            self._cond.notify()

    def _start(
        self, pool: object, func: Callable[..., Any], iterable: Iterable[Any],
        options: tuple[float | None, int],
    ) -> None:
        """Make a task of each item and submit them (``pool`` is held until they end)."""
        fn_blob, name = serialize.function_info(func)
        tasks = [
            Task(serialize.call_payload(fn_blob, STREAM, (item,), {}), self, index,
                 f"{name} on item {index}", options)
            for index, item in enumerate(iterable)
        ]
        self._tasks = tasks
        self._left = len(tasks)
        self._pool = pool if tasks else None
        self._engine.submit(tasks)

    # -- the user side

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self.next()

    def next(self, timeout: float | None = None) -> T:
        try:
            with self._cond:
                ready = self._cond.wait_for(
                    lambda: self._values or not self._left or self._closed, timeout
                )
                if not ready:
                    raise GetTimeoutError(f"no value within {timeout}s")
                if not self._values or self._closed:
                    raise StopIteration
                ok, value = self._values.popleft()
        except KeyboardInterrupt:
            self.close()
            raise
        if not ok:
            raise for_pool(value)
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the tasks that have not finished; the iteration ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for task in self._tasks:
            if task.sink is self:  # not settled yet
                self._engine.cancel(task)
        self._pool = None

    def __enter__(self) -> StreamIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
