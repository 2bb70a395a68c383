"""``procpool.Pool``: the ``multiprocessing.Pool`` API on procpool's engine."""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from procpool._api.chunks import chunk_bounds, chunksize_of, length_hint
from procpool._api.imap import IMapIterator, task_makers
from procpool._api.process_view import WorkerProcess
from procpool._api.progress import ProgressOption, progress_bar, track_map
from procpool._api.results import AsyncResult, MapResult
from procpool._core.backend import Backend
from procpool._core.state import State
from procpool._core.task import Task
from procpool._engine.engine import Engine
from procpool._worker import serialize
from procpool._worker.main import APPLY, MAP, STARMAP

T = TypeVar("T")

_DEFAULT_WINDOW_PER_WORKER = 512


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get_context(context: Any) -> Any:
    """A multiprocessing context from None, a start-method name or a context."""
    if context is None:
        return multiprocessing.get_context()
    if isinstance(context, str):
        try:
            return multiprocessing.get_context(context)
        except ValueError:
            methods = ", ".join(multiprocessing.get_all_start_methods())
            raise ValueError(
                f"unknown start method {context!r}; use one of: {methods}"
            ) from None
    if not hasattr(context, "Process"):
        raise TypeError(f"context must be a start-method name or a multiprocessing context, "
                        f"not {type(context).__name__}")
    return context


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")


class Pool:
    """A process pool with the API of ``multiprocessing.Pool``.

    Same names, signatures and semantics; change one import. On top of the stdlib:
    a worker that dies fails only the task it held (``WorkerLostError``) and is
    replaced; ``task_timeout`` and ``cancel()`` really stop a task; ``retries`` reruns
    tasks whose worker died or timed out; ``max_memory_per_child`` recycles workers
    that grow; lambdas and closures work under every start method; ``map``/``imap``
    take ``progress=True``.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
    ) -> None:
        if processes is None:
            processes = cpu_count()
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, not {type(initializer).__name__}")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        _check_positive("task_timeout", task_timeout)
        _check_positive("max_memory_per_child", max_memory_per_child)
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, got {retries!r}")
        self._processes = processes
        self._task_timeout = task_timeout
        self._retries = retries
        self._default_options = (task_timeout, retries)
        self._engine: Backend = Engine(
            get_context(context),
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            max_memory_per_child,
        )
        self._finalizer = weakref.finalize(self, _shutdown, self._engine)
        self._imaps: weakref.WeakSet[IMapIterator[Any]] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<procpool.Pool state={self._engine.state.value} processes={self._processes}>"

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.state is State.RUNNING:
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}",
                ResourceWarning, source=self, stacklevel=2,
            )
        # Shut down here, not only through the weakref: a warnings filter that
        # records the warning keeps ``source`` (self) alive, and a resurrected
        # object's weakref callbacks never run.
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> Pool:
        self._require_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    # -- single calls

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> T:
        """Run ``func(*args, **kwds)`` in a worker and return its result (blocking).

        When a worker is idle and nothing else is queued, the calling thread sends the
        call and waits for the answer itself (no hand-off to the scheduler thread).
        """
        try:
            result = self._apply_task(func, args, kwds, None, None, **options)
        except _Unpicklable as failed:
            unpicklable: AsyncResult[T] = failed.result
            return unpicklable.get()
        try:
            if not self._engine.call_direct(result):
                self._engine.submit([result])
        except KeyboardInterrupt:
            result.cancel()
            raise
        return result.get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> AsyncResult[T]:
        """Submit ``func(*args, **kwds)``; return an AsyncResult at once.

        ``callback(result)`` or ``error_callback(exception)`` run in the parent, in
        completion order, on procpool's callback thread.
        """
        try:
            result = self._apply_task(
                func, args, kwds, callback, error_callback, task_timeout, retries
            )
        except _Unpicklable as failed:
            return failed.result
        self._engine.submit_one(result)
        return result

    def _apply_task(
        self,
        func: Callable[..., T],
        args: Iterable[Any],
        kwds: Mapping[str, Any] | None,
        callback: Callable[[T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> AsyncResult[T]:
        if not callable(func) or callback is not None or error_callback is not None:
            _check_callable(func, callback, error_callback)
        if type(args) is not tuple:
            if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
                raise TypeError(
                    f"args must be a tuple of arguments, not {type(args).__name__}; "
                    f"for one argument write args=(x,)"
                )
            args = tuple(args)
        try:
            fn_part, name = serialize.function_info(func)
            payload = serialize.call_payload(
                fn_part, APPLY, args, dict(kwds) if kwds else _NO_KWARGS
            )
        except Exception as exc:  # as the stdlib: get() raises it, not apply_async
            failed: AsyncResult[T] = AsyncResult(self._engine, callback, error_callback)
            failed._set(False, exc)
            raise _Unpicklable(failed) from None
        options = self._default_options
        if task_timeout is not None or retries is not None:
            options = self._options(task_timeout, retries)
        result: AsyncResult[T] = AsyncResult(self._engine, callback, error_callback)
        result._hold(self)
        Task.__init__(result, payload, result, 0, name, options)  # its own task
        return result

    # -- maps

    def map(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: ProgressOption = False,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> list[T]:
        """``list(map(func, iterable))`` in parallel; the first error is raised."""
        result = self._map_async(func, iterable, chunksize, MAP, None, None, task_timeout, retries)
        return track_map(result, progress)

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: ProgressOption = False,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> list[T]:
        """Like ``map`` but calls ``func(*item)``."""
        result = self._map_async(
            func, iterable, chunksize, STARMAP, None, None, task_timeout, retries
        )
        return track_map(result, progress)

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> MapResult[T]:
        """Non-blocking ``map``: a MapResult whose ``get()`` is the list."""
        return self._map_async(
            func, iterable, chunksize, MAP, callback, error_callback, task_timeout, retries
        )

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> MapResult[T]:
        """Non-blocking ``starmap``."""
        return self._map_async(
            func, iterable, chunksize, STARMAP, callback, error_callback, task_timeout, retries
        )

    def imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = 1,
        *,
        progress: ProgressOption = False,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> Iterator[T]:
        """Lazy ``map``: results in input order, input read a bounded window ahead.

        ``chunksize=1`` (the stdlib's default) makes each item its own task: its own
        time limit and crash domain. ``chunksize=None`` lets the chunk size adapt to
        the measured rate (about 5 ms of work a chunk): far faster for small items.
        """
        it = self._imap(func, iterable, chunksize, True, task_timeout, retries)
        return progress_bar(it, progress, length_hint(iterable))

    def imap_unordered(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = 1,
        *,
        progress: ProgressOption = False,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> Iterator[T]:
        """Like ``imap`` but yields results as they complete."""
        it = self._imap(func, iterable, chunksize, False, task_timeout, retries)
        return progress_bar(it, progress, length_hint(iterable))

    # -- lifecycle

    def close(self) -> None:
        """Accept no more tasks; workers exit once the queued ones are done.

        An ``imap`` already started reads the rest of its input (as the stdlib's does),
        so its results can still be consumed.
        """
        if self._engine.state is State.RUNNING:
            for it in list(self._imaps):  # before closing: a feeder keeps the pool open
                it.feed_rest()
        self._engine.close()

    def terminate(self) -> None:
        """Stop now: cancel what has not finished and end every worker."""
        self._engine.terminate()
        self._engine.join()
        self._finalizer.detach()

    def join(self) -> None:
        """Wait for the workers to exit; call ``close()`` or ``terminate()`` first."""
        if self._engine.state is State.RUNNING:
            raise ValueError("Pool is still running")
        if self._engine.callbacks.is_current():
            raise RuntimeError("cannot join the pool from one of its own callbacks")
        self._engine.join()
        self._finalizer.detach()

    # -- extras

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the current worker processes (for diagnostics and tests)."""
        return self._engine.worker_pids()

    @property
    def _pool(self) -> tuple[WorkerProcess, ...]:
        """The live workers, as the stdlib's ``Pool._pool`` list (read-only here): each
        with ``pid``, ``name``, ``is_alive()``, ``exitcode``, ``terminate()`` and
        ``join()``.

        A snapshot: workers the scheduler replaces later are not in it.
        """
        return tuple(WorkerProcess(process) for process in self._engine.worker_processes())

    def _repopulate_pool(self) -> None:
        """Kept for code that calls the stdlib's: procpool's scheduler keeps the pool
        full on its own, so there is nothing to do."""

    # -- internal

    def _require_running(self) -> None:
        if self._engine.state is not State.RUNNING:
            raise self._engine.not_running_error()

    def _options(self, task_timeout: float | None, retries: int | None) -> tuple[float | None, int]:
        if task_timeout is None and retries is None:
            return self._default_options
        _check_positive("task_timeout", task_timeout)
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative int, got {retries!r}")
        return (
            self._task_timeout if task_timeout is None else task_timeout,
            self._retries if retries is None else retries,
        )

    def _map_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        chunksize: int | None,
        mode: int,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        task_timeout: float | None,
        retries: int | None,
    ) -> MapResult[T]:
        _check_callable(func, callback, error_callback)
        self._require_running()
        items = iterable if isinstance(iterable, (list, tuple)) else list(iterable)
        bounds = chunk_bounds(chunksize, len(items), self._processes)
        result: MapResult[T] = MapResult(self._engine, bounds, callback, error_callback)
        if not bounds:
            return result
        try:
            fn_blob = serialize.dumps_function(func)
        except Exception as exc:  # as the stdlib: get() raises it
            result._set(False, exc)
            return result
        name = serialize.describe(func)
        options = self._options(task_timeout, retries)
        result._hold(self)
        # Submit as the chunks are pickled, so workers start on the first one while
        # the rest of the input is still being pickled here.
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
                if index < self._processes or len(batch) >= 8 or stop == len(items):
                    result._tasks.extend(batch)
                    self._engine.submit(batch)
                    batch = []
        except BaseException:
            result.cancel()
            raise
        return result

    def _imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None,
        ordered: bool,
        task_timeout: float | None,
        retries: int | None,
    ) -> IMapIterator[T]:
        _check_callable(func, None, None)
        self._require_running()
        size = None if chunksize is None else chunksize_of(chunksize, 0, self._processes)
        make_task, make_batch = task_makers(func, self._options(task_timeout, retries))
        window = max(16, self._processes * _DEFAULT_WINDOW_PER_WORKER)
        # A worker recycled after N tasks or at a memory mark must count and check
        # each item as a task: no batches then.
        batches = None if self._engine.recycles else make_batch
        it: IMapIterator[T] = IMapIterator(
            self._engine, make_task, iter(iterable), size, ordered, window, self._processes,
            batches,
        )
        it._pool = self  # (held until it ends, as the stdlib's IMapIterator._pool)
        self._imaps.add(it)
        return it


class _Unpicklable(Exception):
    """A call that could not be pickled: ``result`` already holds the error."""

    def __init__(self, result: AsyncResult[Any]) -> None:
        self.result = result


def _shutdown(engine: Backend) -> None:
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


_NO_KWARGS: dict[str, Any] = {}  # (only ever pickled)


def _check_callable(func: object, callback: object, error_callback: object) -> None:
    if not callable(func):
        raise TypeError(f"func must be a callable, not {type(func).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a callable, not {type(callback).__name__}")
    if error_callback is not None and not callable(error_callback):
        raise TypeError(f"error_callback must be a callable, not {type(error_callback).__name__}")
