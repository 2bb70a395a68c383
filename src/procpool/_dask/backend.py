"""The Dask backend: procpool's Backend interface on ``distributed`` futures.

::

    user threads                      Dask (client loop, scheduler, workers)  collector thread
    ────────────                      ──────────────────────────────────────  ────────────────
    submit(tasks) ─ Client.map(run, payloads, key=procpool-<pool>-<tid>, pure=False)
      calls[key] = task                  run(payload) on a worker ─▶ (ok, blob)
                                         done ─▶ add_done_callback ─▶ done queue ─▶ get()
                                                                       gather the batch,
                                                                       decode, sink._resolve
                                                                       └─ callback? ─▶ callbacks
                                                                          (procpool's thread)
    cancel/terminate ─ pop calls[key], Future.cancel (a running call: see stop)
    task_timeout: the collector's one wait ends at the nearest deadline

**One owner of the table.** ``calls`` maps a Dask key to its task; whoever pops a key
(the collector on an answer, a cancel, terminate, a deadline) settles that task, so
each sink is resolved exactly once. The collector is the only thread that fetches and
decodes results; it never runs user code (callbacks go to procpool's callback thread)
and Dask's loop only puts finished futures into a queue.

**What Dask does, and does not.** A worker that dies: Dask reruns its task elsewhere
(``distributed.scheduler.allowed-failures``); when it gives up (``KilledWorker``) the
call fails with ``WorkerLostError``. ``retries=`` is passed to Dask as ``retries``.
Dask cannot interrupt a running task: a cancel or a time limit settles the call at
once, and its worker is restarted only on the backend's own cluster of processes
(best-effort elsewhere: the call runs to its end, its result dropped).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import distributed

from procpool._core.callbacks import CallbackRunner
from procpool._core.errors import (
    CancelledError,
    PoolBrokenError,
    TaskTimeoutError,
    fresh_copy,
)
from procpool._core.feeders import Feeders, not_running_error
from procpool._core.state import State
from procpool._core.task import DISCARD, TID_STEP, Task
from procpool._dask import answers, remote
from procpool._dask.cluster import Connection
from procpool._worker import serialize

log = logging.getLogger("procpool")


class DaskBackend:
    """Pool and Executor calls on a Dask cluster (see procpool._core.backend.Backend)."""

    recycles = False  # (maxtasksperchild is refused: Dask does not recycle workers)

    def __init__(
        self,
        connection: Connection,
        processes: int | None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None:
        self.callbacks = CallbackRunner()
        self.owner_pid = os.getpid()
        self._connection = connection
        self._client = connection.client
        self._processes = processes or connection.threads()
        self._name = f"procpool-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._state = State.RUNNING
        self._broken: BaseException | None = None
        self._calls: dict[str, tuple[Task, Any]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._feeders = Feeders(self._lock, lambda: self._done.put(None))
        self._tids = itertools.count(TID_STEP, TID_STEP)
        self._plugin: str | None = None
        if initializer is not None:
            self._start_initializer(initializer, initargs)
        self._thread = threading.Thread(
            target=self._collect, name="procpool-dask-results", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ calls

    def submit(self, tasks: list[Task], *, feeder: bool = False) -> None:
        """Hand tasks to Dask (one ``Client.map`` for many), keyed by this pool and
        the task id; ``pure=False``: two identical calls run twice."""
        with self._lock:
            if self._feeders.refuse(self._state, feeder):
                raise self.not_running_error()
            keys = [self._key(task) for task in tasks]
            data = [_call_data(task) for task in tasks]
            batches = [task.items is not None for task in tasks]
            retries = max(task.retries for task in tasks)
            if len(tasks) == 1:
                futures = [self._client.submit(
                    remote.run, data[0], batches[0], key=keys[0], pure=False, retries=retries
                )]
            else:
                futures = self._client.map(
                    remote.run, data, batches, key=keys, pure=False, retries=retries
                )
            now = time.monotonic()
            for key, task, future in zip(keys, tasks, futures, strict=True):
                self._calls[key] = (task, future)
                if task.timeout is not None:
                    heapq.heappush(self._deadlines, (now + task.timeout, key))
                future.add_done_callback(self._done.put)
        if any(task.timeout is not None for task in tasks):
            self._done.put(None)  # the collector's wait must end at the new deadline

    def submit_one(self, task: Task) -> None:
        self.submit([task])

    def start_feeder(self, feed: Callable[[], None]) -> None:
        self._feeders.start(feed)

    def call_direct(self, task: Task, queued: bool = False) -> bool:
        return False  # no worker to lend: every call goes through the scheduler

    def cancel(self, task: Task) -> None:
        """Forget the call (its sink already says cancelled) and cancel it in Dask."""
        with self._lock:
            call = self._calls.pop(self._key(task), None) if task.tid else None
        if call is not None:
            _drop(call[0])
            self._stop([call[1]])

    # ------------------------------------------------------------- life cycle

    @property
    def state(self) -> State:
        return self._state

    @property
    def broken_error(self) -> BaseException | None:
        return self._broken

    def not_running_error(self) -> BaseException:
        return not_running_error(self._state, self._broken)

    def close(self) -> None:
        with self._lock:
            if self._state is State.RUNNING:
                self._state = State.CLOSING
        self._done.put(None)

    def terminate(self) -> None:
        """Fail what is unfinished (CancelledError) and cancel it in Dask."""
        with self._lock:
            if self._state is not State.BROKEN:
                self._state = State.TERMINATING
            calls, self._calls = list(self._calls.values()), {}
        error = CancelledError("the pool was terminated before this task finished")
        for task, _ in calls:
            answers.resolve(task, False, error)
        if calls and self._connection.cluster is None:  # an own cluster closes anyway
            self._cancel([future for _, future in calls])
        self._done.put(None)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        self._feeders.join(timeout)
        self.callbacks.stop()
        return True

    # ---------------------------------------------------------------- workers

    @property
    def processes(self) -> int:
        return self._processes

    def grow(self, processes: int) -> None:
        """The cluster is as big as it is: only the count the facade sizes by grows."""
        self._processes = max(self._processes, processes)

    def worker_pids(self) -> list[int]:
        """The Dask workers' pids (one process's, repeated, on a cluster of threads)."""
        return sorted(self._client.run(os.getpid).values())

    def worker_processes(self) -> list[Any]:
        return []  # no multiprocessing.Process stands for a Dask worker

    def signal_workers(self, signum: int) -> None:
        """Signal the workers of the backend's own cluster of processes (their
        nannies replace them); a shared cluster's workers are not ours to signal."""
        if self._connection.restartable:
            self._client.run(_signal_self, signum, wait=False)

    def owns_current_thread(self) -> bool:
        return threading.current_thread() is self._thread or self.callbacks.is_current()

    def threads(self) -> list[threading.Thread]:
        """The threads this backend started (for the tests' leak checks)."""
        threads = [self._thread, *self._feeders.threads]
        if self.callbacks._thread is not None:
            threads.append(self.callbacks._thread)
        return threads

    # ------------------------------------------------------- collector thread

    def _collect(self) -> None:
        """Settle finished calls as they come; end once closed and nothing is left."""
        try:
            while True:
                done = self._wait()
                if done:
                    self._settle(done)
                self._enforce_deadlines()
                if self._wound_down():
                    return
        except BaseException as exc:
            log.exception("procpool: the Dask result collector failed; the pool is broken")
            self._break(PoolBrokenError(f"the Dask backend failed: {exc!r}"))
        finally:
            self._finish()

    def _wait(self) -> list[Any]:
        """Block until a call is done or woken, at most until the nearest deadline;
        take every finished future that is waiting."""
        timeout = None
        if self._deadlines:
            timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
        try:
            first = self._done.get(timeout=timeout)
        except queue.Empty:
            return []
        done = [first]
        while not self._done.empty():
            done.append(self._done.get())
        return [future for future in done if future is not None]

    def _settle(self, futures: list[Any]) -> None:
        with self._lock:
            calls = [
                (call, future) for future in futures
                if (call := self._calls.pop(future.key, None)) is not None
            ]
        finished = [(task, future) for (task, _), future in calls if future.status == "finished"]
        others = [(task, future) for (task, _), future in calls if future.status != "finished"]
        if finished:
            for (task, _), outcome in zip(finished, self._gather(finished), strict=True):
                answers.settle(task, outcome)
        for task, future in others:
            answers.resolve(task, False, self._dask_error(task, future))

    def _gather(self, finished: list[tuple[Task, Any]]) -> list[Any]:
        """The answers of finished futures, in one round trip when all arrive."""
        futures = [future for _, future in finished]
        try:
            return list(self._client.gather(futures))
        except BaseException:
            return [self._one(future) for future in futures]

    def _one(self, future: Any) -> Any:
        try:
            return future.result()
        except BaseException as exc:  # released or lost meanwhile: that call's error
            return answers.Failed(exc)

    def _dask_error(self, task: Task, future: Any) -> BaseException:
        """What a call fails with when Dask, not the call, failed it."""
        if future.status == "cancelled":
            return CancelledError("the call was cancelled in Dask")
        try:
            exc = future.exception()
        except BaseException as error:
            exc = error
        if isinstance(exc, distributed.KilledWorker):
            return answers.lost(task, exc)
        return exc if isinstance(exc, BaseException) else RuntimeError(repr(exc))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        overdue = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, key = heapq.heappop(self._deadlines)
                call = self._calls.pop(key, None)
                if call is not None:
                    overdue.append(call)
        for task, _ in overdue:
            assert task.timeout is not None
            answers.resolve(task, False, TaskTimeoutError(task.timeout, None, task.name))
        if overdue:
            self._stop([future for _, future in overdue])

    def _wound_down(self) -> bool:
        with self._lock:
            return self._state is not State.RUNNING and not self._calls and not self._feeders.count

    def _finish(self) -> None:
        try:
            if self._plugin is not None and not self._connection.owns_client:
                self._client.unregister_worker_plugin(self._plugin)
        except BaseException:
            log.exception("procpool: could not remove the initializer from the Dask workers")
        try:
            self._connection.close()
        except BaseException:
            log.exception("procpool: closing the Dask client failed")

    # ------------------------------------------------------------------ helpers

    def _key(self, task: Task) -> str:
        if not task.tid:
            task.tid = next(self._tids)
        return f"{self._name}-{task.tid}"

    def _start_initializer(
        self, initializer: Callable[..., object], initargs: Iterable[Any]
    ) -> None:
        """Register the initializer as a worker plugin; a failure breaks the pool."""
        name = f"{self._name}-initializer"
        try:
            self._client.register_plugin(remote.Initializer(name, initializer, initargs))
        except BaseException as exc:
            error = PoolBrokenError(f"the initializer failed on a Dask worker: {exc!r}")
            error.__cause__ = exc
            self._break(error)
            return
        self._plugin = name

    def _break(self, error: BaseException) -> None:
        with self._lock:
            self._state = State.BROKEN
            self._broken = error
            calls, self._calls = list(self._calls.values()), {}
        for task, _ in calls:
            answers.resolve(task, False, fresh_copy(error))
        self._done.put(None)

    def _stop(self, futures: list[Any]) -> None:
        """Cancel calls in Dask; on our own cluster of processes, restart the workers
        that run them (Dask cannot interrupt a running task)."""
        running: list[str] = []
        if self._connection.restartable:
            keys = {future.key for future in futures}
            running = [
                worker for worker, held in self._client.processing().items()
                if keys.intersection(held)
            ]
        self._cancel(futures)
        if running:
            self._client.restart_workers(running, raise_for_error=False)

    def _cancel(self, futures: list[Any]) -> None:
        try:
            self._client.cancel(futures)
        except BaseException:  # a client that is closing: nothing left to cancel
            log.debug("procpool: cancelling in Dask failed", exc_info=True)


def _call_data(task: Task) -> bytes | tuple[bytes, Any]:
    """What travels to the worker: the payload, or, when its large buffers sit in
    this machine's memfds, the function's pickle and the arguments (Dask sends their
    buffers out of band itself)."""
    if not task.fds:
        return bytes(task.payload) if type(task.payload) is not bytes else task.payload
    fn_blob, args = serialize.split_call(task.payload, list(task.fds))
    task.release()
    task.payload = b""
    return fn_blob, args


def _drop(task: Task) -> None:
    task.sink = DISCARD
    task.payload = b""


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


