"""``procpool.Pool``: the ``multiprocessing.Pool`` API on procpool's engine."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from procpool._api.chunks import chunk_bounds, chunksize_of, length_hint
from procpool._api.finalize import shutdown_pool
from procpool._api.imap import IMapIterator, task_makers
from procpool._api.options import (
    check_callable,
    check_positive,
    check_retries,
    cpu_count,
    get_context,
    task_options,
)
from procpool._api.process_view import WorkerProcess
from procpool._api.progress import ProgressOption, progress_bar, track_map
from procpool._api.results import AsyncResult, MapResult, Unpicklable, apply_result, submit_chunks
from procpool._api.share import Shared, Shares
from procpool._api.stream import StreamIterator
from procpool._core.backend import Backend
from procpool._core.state import State
from procpool._engine.engine import Engine, WorkerSpec
from procpool._worker import serialize
from procpool._worker.main import MAP, STARMAP

T = TypeVar("T")

_DEFAULT_WINDOW_PER_WORKER = 512


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
        check_positive("task_timeout", task_timeout)
        check_positive("max_memory_per_child", max_memory_per_child)
        check_retries(retries)
        self._processes = processes
        self._default_options = (task_timeout, retries)
        self._engine: Backend = self._make_backend(WorkerSpec(
            get_context(context), processes, initializer, initargs, maxtasksperchild,
            max_memory_per_child,
        ))
        self._finalizer = weakref.finalize(self, shutdown_pool, self._engine)
        self._imaps: weakref.WeakSet[IMapIterator[Any]] = weakref.WeakSet()
        self._streams: weakref.WeakSet[StreamIterator[Any]] = weakref.WeakSet()
        self._shares = Shares()

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
            result = apply_result(
                self._engine, self, self._default_options, func, args, kwds, None, None, **options
            )
        except Unpicklable as failed:
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
            result = apply_result(
                self._engine, self, self._default_options, func, args, kwds, callback,
                error_callback, task_timeout, retries,
            )
        except Unpicklable as failed:
            return failed.result
        self._engine.submit_one(result)
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
        self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None, callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *, task_timeout: float | None = None, retries: int | None = None,
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
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = 1,
        *, progress: ProgressOption = False, task_timeout: float | None = None,
        retries: int | None = None,
    ) -> Iterator[T]:
        """Like ``imap`` but yields results as they complete."""
        it = self._imap(func, iterable, chunksize, False, task_timeout, retries)
        return progress_bar(it, progress, length_hint(iterable))

    def imap_stream(
        self, func: Callable[[Any], Iterable[T]], iterable: Iterable[Any], *,
        task_timeout: float | None = None,
    ) -> StreamIterator[T]:
        """Run ``func(item)`` for each item, each a task that may yield (a generator):
        every value comes back the moment it is yielded, from all the tasks, in the
        order the values arrive. The input is read lazily, 512 tasks per process
        ahead. A failed task raises its error once, where it comes;
        streaming tasks are never retried (their values would come twice)."""
        check_callable(func, None, None)
        self._require_running()
        options = (self._options(task_timeout, None)[0], 0)
        stream: StreamIterator[T] = StreamIterator(self._engine)
        self._streams.add(stream)
        stream._start(self, func, iterable, options,
                      max(16, self._processes * _DEFAULT_WINDOW_PER_WORKER))  # fmt: skip
        return stream

    # -- lifecycle

    def close(self) -> None:
        """Accept no more tasks; workers exit once the queued ones are done.

        An ``imap`` already started reads the rest of its input (as the stdlib's does),
        so its results can still be consumed.
        """
        if self._engine.state is State.RUNNING:
            for it in list(self._imaps):  # before closing: a feeder keeps the pool open
                it.feed_rest()
            for stream in list(self._streams):
                stream.feed_rest()
        self._engine.close()

    def terminate(self) -> None:
        """Stop now: cancel what has not finished and end every worker."""
        self._engine.terminate()
        self._engine.join()
        self._finalizer.detach()
        self._shares.release_all()

    def join(self) -> None:
        """Wait for the workers to exit; call ``close()`` or ``terminate()`` first."""
        if self._engine.state is State.RUNNING:
            raise ValueError("Pool is still running")
        if self._engine.callbacks.is_current():
            raise RuntimeError("cannot join the pool from one of its own callbacks")
        self._engine.join()
        self._finalizer.detach()
        self._shares.release_all()

    # -- extras

    def share(self, obj: T) -> Shared[T]:
        """A handle that stands for ``obj`` in tasks' arguments, at any depth: each
        worker receives the object once, its large buffers mapped read-only from
        shared memory (see procpool.Shared). Released at ``join()``/``terminate()``."""
        self._require_running()
        return self._shares.add(obj)

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

    def _make_backend(self, spec: WorkerSpec) -> Backend:
        """The backend that runs this pool's calls, made once (``procpool.dask.Pool``
        makes a Dask one from the same spec)."""
        return Engine(spec)

    def _require_running(self) -> None:
        if self._engine.state is not State.RUNNING:
            raise self._engine.not_running_error()

    def _options(self, task_timeout: float | None, retries: int | None) -> tuple[float | None, int]:
        return task_options(self._default_options, task_timeout, retries)

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
        check_callable(func, callback, error_callback)
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
        result._hold(self)
        submit_chunks(
            self._engine, result, fn_blob, serialize.describe(func), mode, items, bounds,
            self._options(task_timeout, retries), self._processes,
        )
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
        check_callable(func, None, None)
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




