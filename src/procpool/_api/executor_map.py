"""The calls of ``Executor.map``: futures made lazily, and the result iterator."""

from __future__ import annotations

import itertools
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from procpool._api.future import Future
from procpool._core.backend import Backend
from procpool._core.task import Task

if TYPE_CHECKING:
    from procpool._api.executor import Executor


def make(
    new: Callable[[bytes, str], Future[Any]],
    call: Callable[[Any], bytes],
    name: str,
    error: Exception | None,
    data: Any,
) -> Future[Any]:
    """One call of a map: a new future, or a failed one if the call cannot be pickled."""
    if error is not None:
        return failed(error)
    try:
        payload = call(data)
    except Exception as exc:
        return failed(exc)
    return new(payload, name)


def failed(error: BaseException) -> Future[Any]:
    """A future that failed before it was submitted (a call that cannot be pickled)."""
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def new_future(
    engine: Backend,
    live: set[Future[Any]],
    options: tuple[float | None, int],
    payload: bytes,
    name: str,
) -> Future[Any]:
    future: Future[Any] = Future(engine, live)
    future._task = Task(payload, future, 0, name, options)
    return future


def batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """``itertools.batched`` (Python 3.12), as lists."""
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def refill(
    executor_ref: weakref.ref[Executor],
    make: Callable[[Any], Future[Any]],
    source: Iterator[Any],
    futures: deque[Future[Any]],
) -> None:
    """Submit the next call of a buffered map.

    As in the stdlib, the map holds only a weak reference to the executor, so that it
    can be collected; once it is, nothing more is submitted.
    """
    executor = executor_ref()
    if executor is None:
        return
    data = next(source, None)
    if data is not None:
        future = make(data)
        executor._start([future], own=False)
        futures.append(future)


def results(
    futures: deque[Future[Any]],
    refill: Callable[[deque[Future[Any]]], None] | None,
    end: float | None,
    chunked: bool,
) -> Iterator[Any]:
    """Executor.map's result iterator; closing it cancels the calls still out."""
    try:
        while futures:
            if refill is not None:
                refill(futures)
            timeout = None if end is None else end - time.monotonic()
            # No local holds a result while the consumer has it (bpo-14406).
            if chunked:
                chunk = result_or_cancel(futures.popleft(), timeout)
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
            else:
                yield result_or_cancel(futures.popleft(), timeout)
    finally:
        for future in futures:
            future.cancel()


def result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # after a timeout; a no-op once finished
        del future  # do not keep the result alive through this frame
