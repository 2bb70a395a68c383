"""``procpool.Executor``: the ``concurrent.futures`` API on the Pool's engine.

::

    user thread                        scheduler thread                 callback thread
    ───────────                        ────────────────                 ───────────────
    submit(fn, *args)
      pickle the call ─▶ Task(sink = Future) ─▶ Backend.submit
                                       resolve: Future._resolve
                                         result or exception, waiters ──▶ done callbacks
    result() / wait() / as_completed()  ◀── wake at once (waiters)

**Futures.** ``submit`` returns a real ``concurrent.futures.Future`` that is also the
task's sink (``_future.Future``): the scheduler completes it in place, and posts its
done callbacks to the callback thread. Its ``cancel()`` stops a running call too.

**Shutdown.** ``shutdown`` maps onto ``Backend.close`` (and ``join`` when waiting);
``wait=False`` leaves one thread that joins the engine once the work is done, then
ends. ``terminate_workers``/``kill_workers`` cancel what has not started, fail what
runs and stop every worker at once.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from procpool._api import executor_map
from procpool._api.finalize import finish_at_exit, release_executor
from procpool._api.future import Future
from procpool._api.options import (
    check_positive,
    check_retries,
    check_tasks_per_child,
    cpu_count,
    get_context,
)
from procpool._api.process_view import ProcessTable, WorkerProcess
from procpool._api.share import Shared, Shares
from procpool._core.backend import Backend
from procpool._core.task import Task
from procpool._engine.engine import Engine, WorkerSpec
from procpool._worker import serialize
from procpool._worker.main import APPLY, MAP, STARMAP

T = TypeVar("T")
P = ParamSpec("P")


class Executor(concurrent.futures.Executor):
    """A drop-in for ``concurrent.futures.ProcessPoolExecutor`` on procpool's engine.

    Same signatures and contract (``submit``, ``map`` with 3.14's ``buffersize``,
    ``shutdown``, ``terminate_workers``, ``kill_workers``). Unlike the stdlib, a worker
    that dies fails only its own future (``WorkerLostError``, a ``BrokenProcessPool``)
    and the executor goes on; ``cancel()`` stops a running call; ``task_timeout``,
    ``retries`` and ``max_memory_per_child`` work as on ``Pool``.

    Differences to know: a call that cannot be pickled raises ``SerializationError``
    from ``submit`` (the stdlib sets the error on the future); workers start with the
    executor, not on the first submits; ``max_tasks_per_child`` works with every start
    method (the stdlib refuses fork, and defaults to spawn when it is given);
    ``mp_context`` may also be a start-method name.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        max_memory_per_child: int | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = cpu_count()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        check_tasks_per_child(max_tasks_per_child)
        check_positive("task_timeout", task_timeout)
        check_positive("max_memory_per_child", max_memory_per_child)
        check_retries(retries)
        self._max_workers = max_workers
        self._options = (task_timeout, retries)
        self._live: set[Future[Any]] = set()
        self._shares = Shares()
        self._lock = threading.Lock()
        self._shutdown = False
        self._joiner: threading.Thread | None = None
        if mp_context is None and max_tasks_per_child is not None:
            mp_context = "spawn"  # as the stdlib (which refuses fork with it)
        self._mp_context = get_context(mp_context)
        # As the stdlib: with fork every worker starts now (a fork from a thread is
        # unsafe); otherwise they start as calls come in (see _grow).
        self._on_demand = self._mp_context.get_start_method() != "fork"
        self._unpicklable = 0  # calls submit failed to pickle (see _grow)
        self._engine: Backend = self._make_backend(WorkerSpec(
            self._mp_context, 0 if self._on_demand else max_workers, initializer, initargs,
            max_tasks_per_child, max_memory_per_child, init_logger="concurrent.futures",
        ))
        self._finalizer = weakref.finalize(self, release_executor, self._engine)
        finish_at_exit.remember(self)

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else self._engine.state.value
        return f"<procpool.Executor state={state} max_workers={self._max_workers}>"

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)``; return its Future at once.

        As in the stdlib, a call that cannot be pickled does not raise here: its
        future fails with the error.
        """
        self._check_open()
        try:
            fn_part, name = serialize.function_info(fn)
            payload = serialize.call_payload(fn_part, APPLY, args, kwargs)
        except Exception as exc:
            self._unpicklable += 1
            if self._on_demand:
                self._grow()
            return executor_map.failed(exc)
        future: Future[T] = Future(self._engine, self._live)
        task = future._task = Task(payload, future, 0, name, self._options)
        future._owner = self
        self._hand_over([future], [task])
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` in parallel, results in order (as the stdlib).

        Calls are submitted at once, or, with ``buffersize``, only ``buffersize`` of
        them (chunks, when ``chunksize > 1``) ahead of the results consumed.
        ``TimeoutError`` from the iterator once ``timeout`` seconds have passed since
        the call; leaving the iterator early cancels (and stops) what is left.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        end = None if timeout is None else time.monotonic() + timeout
        make, source = self._calls(fn, iterables, chunksize)
        first = source if buffersize is None else itertools.islice(source, buffersize)
        futures: deque[Future[Any]] = deque(make(data) for data in first)
        # A buffered map holds its executor weakly (see executor_map.refill), so its futures don't.
        self._start(list(futures), own=buffersize is None)
        refill = None
        if buffersize is not None:
            refill = functools.partial(executor_map.refill, weakref.ref(self), make, source)
        return executor_map.results(futures, refill, end, chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; finish (or, with ``cancel_futures``, cancel) the rest.

        ``wait=False`` returns at once; the workers and threads end once the work is
        done.
        """
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._cancel_pending()
        self._engine.close()
        self._finalizer.detach()
        if wait:
            # From a done callback the callback thread cannot join itself: wait for
            # the work, and leave stopping that thread to the joiner.
            self._engine.join()
            self._shares.release_all()
            if self._engine.callbacks.is_current():
                self._join_later()
        else:
            self._join_later()

    def share(self, obj: T) -> Shared[T]:
        """A handle that stands for ``obj`` in calls' arguments, at any depth: each
        worker receives the object once, its large buffers mapped read-only from
        shared memory (see procpool.Shared). Released by ``shutdown(wait=True)``."""
        self._check_open()
        return self._shares.add(obj)

    def terminate_workers(self) -> None:
        """Stop every worker now with SIGTERM (Python 3.14).

        Calls not yet started are cancelled; running ones fail (``CancelledError``,
        or ``WorkerLostError`` if the worker's death is seen first). The executor
        accepts no more calls.
        """
        self._force_shutdown(None)

    def kill_workers(self) -> None:
        """Like ``terminate_workers`` but with SIGKILL (Python 3.14)."""
        self._force_shutdown(signal.SIGKILL)

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the current worker processes (for diagnostics and tests)."""
        return self._engine.worker_pids()

    @property
    def _processes(self) -> Mapping[int, WorkerProcess]:
        """The stdlib's ``_processes``: ``{pid: process}`` of the live workers.

        A read-only view that follows the workers as they come and go (code and
        CPython's tests use it for pids and liveness); see ``WorkerProcess``.
        """
        return ProcessTable(self._engine)

    @property
    def _broken(self) -> str | bool:
        """The stdlib's ``_broken``: why the executor is broken, or False."""
        error = self._engine.broken_error
        return False if error is None else str(error)

    # -- internal

    def _make_backend(self, spec: WorkerSpec) -> Backend:
        """The backend that runs this executor's calls, made once
        (``procpool.dask.Executor`` makes a Dask one)."""
        return Engine(spec)

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _calls(
        self, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], chunksize: int
    ) -> tuple[Callable[[Any], Future[Any]], Iterator[Any]]:
        """How map builds one call, and the calls' data: argument tuples or chunks."""
        self._check_open()
        name = serialize.describe(fn)
        error: Exception | None = None
        try:
            fn_blob = serialize.dumps_function(fn)
        except Exception as exc:  # as submit: every call fails with the error
            fn_blob, error = b"", exc
        # The maker holds no reference to the executor (see executor_map.refill).
        new = functools.partial(executor_map.new_future, self._engine, self._live, self._options)
        if chunksize == 1:
            call = functools.partial(serialize.call_payload, fn_blob, APPLY, kwargs={})
            make = functools.partial(executor_map.make, new, call, name, error)
            return make, zip(*iterables, strict=False)
        single = len(iterables) == 1
        items = iter(iterables[0]) if single else zip(*iterables, strict=False)
        mode = MAP if single else STARMAP
        call = functools.partial(serialize.call_payload, fn_blob, mode, kwargs={})
        label = f"{name} on a chunk of {chunksize}"
        make = functools.partial(executor_map.make, new, call, label, error)
        return make, executor_map.batched(items, chunksize)

    def _start(self, futures: list[Future[Any]], own: bool) -> None:
        """Hand map's futures over (those that could not be pickled already failed)."""
        calls = [f for f in futures if f._task is not None]
        if calls:
            self._check_open()
            if own:
                for future in calls:
                    future._owner = self
            self._hand_over(calls, [f._task for f in calls])  # type: ignore[misc]

    def _hand_over(self, futures: list[Future[Any]], tasks: list[Task]) -> None:
        self._live.update(futures)
        if self._on_demand:
            self._grow()
        try:
            self._engine.submit(tasks)
        except ValueError:  # shut down between the check and the submit
            self._live.difference_update(futures)
            raise RuntimeError("cannot schedule new futures after shutdown") from None
        except BaseException:  # broken: PoolBrokenError, a BrokenProcessPool
            self._live.difference_update(futures)
            raise

    def _grow(self) -> None:
        """Start workers on demand, as the stdlib does (not with fork): one more each
        time a call comes in while every worker has one, up to ``max_workers``.

        Started here, in the submitting thread, as the stdlib's are: ``_processes``
        lists the worker once ``submit`` returns (see Backend.grow). A call that could
        not be pickled counts as one that took a worker, as in the
        stdlib, whose workers' count only a returned result lowers.
        """
        engine = self._engine
        if engine.processes < min(self._max_workers, len(self._live) + self._unpicklable):
            with self._lock:
                engine.grow(min(self._max_workers, len(self._live) + self._unpicklable))

    def _cancel_pending(self, spare: bool = True) -> None:
        """Cancel the calls no worker has been handed yet (shutdown's cancel_futures).

        As in the stdlib, which counts the calls in its call queue (one per worker,
        and one more) as running, the oldest waiting calls that workers free of a call
        would take next are let run: some of what was submitted runs even if the
        workers were still starting.
        """
        waiting = []
        busy = 0
        for future in self._live.copy():
            task = future._task
            if task is None:
                continue
            if task.attempts == 0:
                waiting.append((task.tid, future))
            else:
                busy += 1
        waiting.sort(key=lambda pair: pair[0])
        spared = max(0, self._max_workers - busy) if spare else 0
        for _, future in waiting[spared:]:
            future.cancel()

    def _force_shutdown(self, signum: int | None) -> None:
        with self._lock:
            self._shutdown = True
        self._cancel_pending(spare=False)
        self._engine.terminate()
        if signum is not None:
            self._engine.signal_workers(signum)
        self._finalizer.detach()
        self._join_later()

    def _join_later(self) -> None:
        """Join the engine from a thread of its own, which ends with the work.

        Not a daemon: like the stdlib's manager thread, it makes interpreter exit
        wait for calls already submitted.
        """
        with self._lock:
            if self._joiner is not None:
                return
            self._joiner = threading.Thread(
                target=self._engine.join, name="procpool-executor-shutdown"
            )
            self._joiner.start()


