"""The scheduler: one thread that owns every task and every worker.

::

    user threads                 scheduler thread                          workers
    ────────────                 ────────────────                          ───────
    submit(task) ─▶ inbox ──wake pipe──▶ poll() on: wake pipe, result pipes,
                                    │      sentinels, writable task pipes,
                                    │      timeout = nearest deadline
                                    ├─ dispatch: pending ─▶ slot.outbox ─pipe─▶ run in order
                                    ├─ collect: RESULT / ERROR ◀────────pipe── send at once
                                    ├─ resolve: sink._resolve(...) ─▶ callback thread
                                    ├─ death: sentinel ─▶ fail the head task, requeue
                                    │         the rest, start a replacement
                                    └─ deadlines: overdue head ─▶ SIGTERM, then SIGKILL

**Inbox.** Other threads never touch the scheduler's tables: they append a task or a
control message to a deque and write one byte to the wake pipe (only when no byte is
already pending, so a burst of submits costs one wake-up).

**Dispatch.** A slot receives calls only once it has said READY. Each slot may hold a
bounded number of calls (prefetch), sized from the measured service time: about 2 ms
of queued work per worker, between 1 and 64 calls. Long tasks are never queued behind
each other, short ones never leave a worker idle waiting for the parent.

**Collect.** Workers run calls in arrival order and answer each at once, so the oldest
unanswered call of a slot (its *head*) is the one running. That is how a death, a
timeout or a cancel hits exactly one task with no acknowledgement message.

**Death.** A sentinel fires: the slot's pipe is drained first (results sent just
before dying still count), then the head task fails with WorkerLostError (or is
retried), the other queued calls go back to the front of the pending queue, and a
new worker starts. Three workers in a row that die before READY break the pool.

**Deadlines.** The poll timeout is the nearest of: the head task's time limit and a
doomed worker's SIGKILL time. Nothing polls on a timer.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing.connection
import os
import select
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from . import _serialize, _shm
from ._errors import (
    CancelledError,
    PoolBrokenError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    TaskTimeoutError,
    WorkerLostError,
)
from ._slot import DISCARD, Slot, Task, _parent_fds, close_parent_fd, parent_pipe
from ._wire import ErrorReport, Kind
from ._worker import WorkerConfig

log = logging.getLogger("procpool")

KILL_GRACE = 0.3
MAX_START_FAILURES = 3
MAX_START_KILLS = 20
_EXTERNAL_KILLS = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP)
_TARGET_QUEUED = 0.002
_MAX_PREFETCH = 64
_STEAL_MIN = 0.005
_MAX_WAIT = 3600.0
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class State(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"
    TERMINATING = "terminating"
    BROKEN = "broken"


class _Cancel:
    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task


class _Close:
    __slots__ = ()


class _Terminate:
    __slots__ = ()


class CallbackRunner:
    """A thread that runs user callbacks in order, so they never block the scheduler."""

    def __init__(self) -> None:
        self._queue: deque[Callable[[], None] | None] = deque()
        self._ready = threading.Semaphore(0)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, fn: Callable[[], None]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="procpool-callbacks", daemon=True
                    )
                    self._thread.start()
        self._queue.append(fn)
        self._ready.release()

    def _run(self) -> None:
        while True:
            self._ready.acquire()
            fn = self._queue.popleft()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # a bug in procpool's own wrapper; keep serving
                log.exception("procpool callback thread error")

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        """Run what is queued, then end the thread (a no-op from the thread itself)."""
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        self._queue.append(None)
        self._ready.release()
        thread.join()


class Engine:
    """The process backend shared by Pool and Executor."""

    def __init__(
        self,
        ctx: Any,
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        max_tasks: int | None = None,
        max_memory: int | None = None,
    ) -> None:
        # The initializer travels as our own pickle (a lambda works); initargs go to
        # the Process as they are, so locks and events can be shared by inheritance.
        init_blob = None
        if initializer is not None:
            init_blob = _serialize.dumps(initializer, "pickle initializer")
        # Workers watch the read end of this pipe; only this process holds the write
        # end, so its death (even by SIGKILL) is an EOF in every worker.
        alive_r, self._alive_w = os.pipe()
        _parent_fds.add(self._alive_w)
        self._alive_r = multiprocessing.connection.Connection(alive_r, writable=False)
        self._config = WorkerConfig(
            init_blob, tuple(initargs), max_tasks, max_memory, self._alive_r
        )
        self._ctx = ctx
        self.processes = processes
        self.callbacks = CallbackRunner()
        self.state = State.RUNNING
        self.broken_error: BaseException | None = None
        self._inbox: deque[Task | _Cancel | _Close | _Terminate] = deque()
        self._submit_lock = threading.Lock()
        self._wake_r, self._wake_w = parent_pipe()
        os.set_blocking(self._wake_r, False)
        # The write end lives as long as this object, not the scheduler: a cancel(),
        # close() or terminate() after the scheduler ended must find this pipe (a
        # write to a closed end fails quietly), never a reused descriptor number.
        weakref.finalize(self, close_parent_fd, self._wake_w)
        self._wake_pending = False
        self._feeders = 0
        self._feeder_threads: list[threading.Thread] = []
        self._next_tid = 1
        self._pending: deque[Task] = deque()
        self._slots: dict[int, Slot] = {}
        self._fds: dict[int, tuple[Callable[[Slot], None], Slot | None]] = {}
        self._poll = select.poll()
        self._service_time: float | None = None
        self._start_failures = 0
        self._start_kills = 0
        # Set once any deadline exists (a task time limit, a doomed worker): until
        # then each turn of the loop skips the deadline scans.
        self._timed = False
        self._terminated = False
        self._last_init_error: str | None = None
        # Start the first workers from the caller's thread, before the scheduler thread
        # exists: a fork taken while another thread holds a lock (an import lock, say)
        # gives a child that deadlocks on it. Import cloudpickle first for the same reason.
        import cloudpickle  # noqa: F401

        self._replenish()
        self._thread = threading.Thread(target=self._main, name="procpool-scheduler", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- user side

    def submit(self, tasks: list[Task], *, feeder: bool = False) -> None:
        """Hand tasks to the scheduler (any thread).

        A ``feeder`` (an imap reading its input, see add_feeder) may go on submitting
        after close(), as the stdlib's task thread does.
        """
        with self._submit_lock:
            if self.state is not State.RUNNING and not (
                feeder and self.state is State.CLOSING and self._feeders
            ):
                raise self._not_running_error()
            for task in tasks:
                task.tid = self._next_tid
                self._next_tid += 1
            self._inbox.extend(tasks)
        self._wake()

    def start_feeder(self, feed: Callable[[], None]) -> None:
        """Run ``feed`` (which submits with ``feeder=True``) in a thread; the pool
        winds down after close() only once every feeder has returned."""
        with self._submit_lock:
            self._feeders += 1
        thread = threading.Thread(target=self._run_feeder, args=(feed,), daemon=True,
                                  name="procpool-imap-feeder")
        self._feeder_threads.append(thread)
        thread.start()

    def _run_feeder(self, feed: Callable[[], None]) -> None:
        try:
            feed()
        finally:
            with self._submit_lock:
                self._feeders -= 1
            self._wake()

    def cancel(self, task: Task) -> None:
        """Stop a task whose sink was already resolved as cancelled (any thread)."""
        self._inbox.append(_Cancel(task))
        self._wake()

    def close(self) -> None:
        with self._submit_lock:
            if self.state is State.RUNNING:
                self.state = State.CLOSING
        self._inbox.append(_Close())
        self._wake()

    def terminate(self) -> None:
        with self._submit_lock:
            if self.state is not State.BROKEN:
                self.state = State.TERMINATING
        self._inbox.append(_Terminate())
        self._wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the scheduler and the callback thread. False on timeout."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        for thread in self._feeder_threads:
            thread.join(timeout)
        self.callbacks.stop()
        return True

    def alive(self) -> bool:
        return self._thread.is_alive()

    def worker_pids(self) -> list[int]:
        return [slot.pid for slot in list(self._slots.values())]

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every current worker (any thread; Executor.kill_workers).

        Only the scheduler reaps a worker, just before it leaves the table, so a pid
        read here belongs to a live worker or one reaped an instant ago; the deaths are
        then handled like any other (call ``terminate()`` first to fail, not retry).
        """
        for slot in list(self._slots.values()):
            slot.signal(signum)

    def _not_running_error(self) -> BaseException:
        if self.state is State.BROKEN and self.broken_error is not None:
            return self.broken_error
        return ValueError("Pool not running")

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # closed: the scheduler is gone, nothing to wake
                pass

    # ------------------------------------------------------------ scheduler side

    def _main(self) -> None:
        try:
            self._watch(self._wake_r, self._on_wake, None)
            while self._step():
                pass
        except BaseException as exc:
            log.exception("procpool scheduler failed; the pool is broken")
            self._break(PoolBrokenError(f"the pool's scheduler failed: {exc!r}"))
            for slot in list(self._slots.values()):
                slot.signal(signal.SIGKILL)
                slot.reap()
                self._forget(slot)
        finally:
            close_parent_fd(self._wake_r)
            close_parent_fd(self._alive_w)
            self._alive_r.close()

    def _step(self) -> bool:
        """One turn of the loop: wait, handle what happened. False when finished."""
        timed = self._timed
        for fd, _ in self._poll.poll(self._poll_timeout() if timed else self._steal_timeout()):
            entry = self._fds.get(fd)
            if entry is not None:
                handler, slot = entry
                handler(slot)  # type: ignore[arg-type]
        if timed:
            self._check_deadlines()
        # Replace dead workers only after the whole batch of events: a new pipe may
        # reuse a closed descriptor's number, and a stale event must not reach it.
        if len(self._slots) < self.processes:
            self._replenish()
        if self._pending:
            self._dispatch()
        else:
            self._steal()
        return self.state is State.RUNNING or not self._wound_down()

    def _watch(self, fd: int, handler: Callable[[Any], None], slot: Slot | None) -> None:
        self._fds[fd] = (handler, slot)
        self._poll.register(fd, _POLL_IN)

    def _unwatch(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def _on_wake(self, _: None) -> None:
        # Order matters: empty the pipe, then clear the flag, then read the inbox. A
        # submitter appends before it reads the flag, so anything it adds after our
        # read of the inbox finds the flag clear and writes a fresh byte. (Clearing
        # the flag before emptying the pipe could swallow that byte and strand a task.)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if type(item) is Task:
                self._pending.append(item)
            elif type(item) is _Cancel:
                self._on_cancel(item.task)
            elif type(item) is _Terminate:
                self._on_terminate()

    # -- workers

    def _replenish(self) -> None:
        if self.state in (State.TERMINATING, State.BROKEN):
            return
        if self.state is State.CLOSING and not self._pending:
            return
        while len(self._slots) < self.processes:
            slot = Slot(self._ctx, self._config)
            self._slots[slot.pid] = slot
            self._watch(slot.result_fd, self._on_readable, slot)
            self._watch(slot.sentinel, self._on_death, slot)

    def _forget(self, slot: Slot) -> None:
        self._unwatch(slot.result_fd)
        self._unwatch(slot.sentinel)
        self._unwatch_write(slot)
        self._slots.pop(slot.pid, None)
        slot.close_fds()

    def _unwatch_write(self, slot: Slot) -> None:
        if self._fds.pop(slot.task_fd, None) is not None:
            self._poll.unregister(slot.task_fd)

    def _on_writable(self, slot: Slot) -> None:
        if slot.flush():
            self._unwatch_write(slot)

    def _flush(self, slot: Slot) -> None:
        if not slot.flush() and slot.task_fd not in self._fds:
            self._fds[slot.task_fd] = (self._on_writable, slot)
            self._poll.register(slot.task_fd, select.POLLOUT)

    def _on_readable(self, slot: Slot) -> None:
        try:
            more = slot.reader.fill()
        except BlockingIOError:
            return
        for kind, tid, payload in slot.reader.frames():
            self._on_frame(slot, kind, tid, payload)
        if not more:
            self._unwatch(slot.result_fd)  # EOF; the sentinel reports the death

    def _drain(self, slot: Slot) -> None:
        while slot.result_fd in self._fds:
            try:
                if not slot.reader.fill():
                    break
            except (BlockingIOError, OSError):
                break
            for kind, tid, payload in slot.reader.frames():
                self._on_frame(slot, kind, tid, payload)

    def _on_frame(self, slot: Slot, kind: int, tid: int, payload: bytes) -> None:
        if kind == Kind.RESULT or kind == Kind.ERROR:
            task = self._take(slot, tid)
            if task is not None:
                self._finish(task, kind == Kind.RESULT, payload)
        elif kind == Kind.RESULT_OOB:
            task = self._take(slot, tid)
            self._finish_oob(slot, task, payload)
        elif kind == Kind.CANCELLED:
            task = self._take(slot, tid)
            if task is not None and not task.cancelled:
                task.attempts -= 1  # stolen before it started: it never ran
                self._pending.appendleft(task)
            if len(slot.outstanding) <= 1:
                slot.stealing = False
        elif kind == Kind.READY:
            slot.ready = True
            self._start_failures = self._start_kills = 0
        elif kind == Kind.RETIRE:
            slot.retiring = True
        elif kind == Kind.INIT_FAILED:
            report: ErrorReport = _serialize.loads(payload)
            slot.init_error = report.traceback

    def _take(self, slot: Slot, tid: int) -> Task | None:
        """Remove a task from the slot's outstanding calls, noting who runs next."""
        outstanding = slot.outstanding
        if not outstanding:
            return None
        now = time.monotonic()
        if outstanding[0].tid == tid:
            task = outstanding.popleft()
            self._note_service_time(now - slot.head_started)
            slot.head_started = now
            slot.stealing = False
        else:
            found = [t for t in outstanding if t.tid == tid]
            if not found:
                return None
            task = found[0]
            outstanding.remove(task)
        task.worker = None
        return task

    def _note_service_time(self, seconds: float) -> None:
        prev = self._service_time
        self._service_time = seconds if prev is None else prev + 0.2 * (seconds - prev)

    def _on_death(self, slot: Slot) -> None:
        self._drain(slot)
        exitcode = slot.reap()
        self._forget(slot)
        outstanding = list(slot.outstanding)
        slot.outstanding.clear()
        if outstanding and not slot.retiring:
            head = outstanding.pop(0)
            head.worker = None
            self._fail_or_retry(head, WorkerLostError(slot.pid, exitcode, head.name))
        self._requeue(outstanding)
        if not slot.ready and not slot.doomed and self.state is not State.TERMINATING:
            self._on_start_failure(slot, exitcode)

    def _on_start_failure(self, slot: Slot, exitcode: int | None) -> None:
        """Count a worker that died before READY; enough in a row break the pool.

        A worker killed from outside while it starts (SIGKILL, SIGTERM: the OOM killer,
        an operator) says nothing about the pool, so those count against a looser
        limit than a failing initializer, an exit or a crash.
        """
        self._start_failures += 1
        if slot.init_error:
            self._last_init_error = slot.init_error
        external = slot.init_error is None and exitcode in _EXTERNAL_KILLS
        self._start_kills = self._start_kills + 1 if external else 0
        limit = MAX_START_KILLS if self._start_kills == self._start_failures else (
            MAX_START_FAILURES
        )
        if self._start_failures < limit:
            return
        why = self._last_init_error or f"the worker exited with code {exitcode} before it was ready"
        self._break(
            PoolBrokenError(
                f"{self._start_failures} workers in a row failed to start; the pool is broken. "
                f"Last failure:\n{why}"
            )
        )

    def _break(self, error: BaseException) -> None:
        with self._submit_lock:
            self.state = State.BROKEN
            self.broken_error = error
        for task in self._drop_all():
            self._resolve(task, False, error)

    def _requeue(self, tasks: list[Task]) -> None:
        for task in reversed(tasks):
            task.worker = None
            self._pending.appendleft(task)

    def _fail_or_retry(self, task: Task, error: BaseException) -> None:
        if task.cancelled:
            return
        if task.attempts <= task.retries and self.state in (State.RUNNING, State.CLOSING):
            self._pending.appendleft(task)
        else:
            self._resolve(task, False, error)

    # -- results

    def _finish(self, task: Task, ok: bool, payload: bytes) -> None:
        if task.cancelled:
            task.release()
            return
        if ok:
            try:
                value = _serialize.loads(payload)
            except BaseException as exc:
                detail = f"{type(exc).__name__}: {exc}"
                ok, value = False, SerializationError("unpickle result", detail)
        else:
            value = _rebuild_error(payload)
        self._resolve(task, ok, value)

    def _finish_oob(self, slot: Slot, task: Task | None, payload: bytes) -> None:
        count, data = _shm.unpack_count(payload)
        try:
            fds = _shm.receive(slot.fd_sock, count, block=False)
        except OSError as exc:
            if task is not None and not task.cancelled:
                error = SerializationError("unpickle result", f"shared memory lost: {exc}")
                self._resolve(task, False, error)
            return
        if task is None or task.cancelled:
            _shm.close_all(fds)
            return
        try:
            value = _shm.loads(data, fds)
        except BaseException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            self._resolve(task, False, SerializationError("unpickle result", detail))
            return
        self._resolve(task, True, value)

    def _resolve(self, task: Task, ok: bool, value: Any) -> None:
        task.release()
        sink, task.sink = task.sink, DISCARD  # break the handle <-> task cycle
        try:
            sink._resolve(task.index, ok, value)
        except BaseException:
            log.exception("procpool: resolving a task failed")

    # -- cancel, time limits, shutdown

    def _on_cancel(self, task: Task) -> None:
        task.cancelled = True
        slot = task.worker
        if slot is None or task not in slot.outstanding:
            return  # pending (dispatch skips it) or already finished
        if slot.outstanding[0] is task:
            self._stop_slot(slot, time.monotonic())
        else:
            slot.queue(Kind.CANCEL, task.tid)
            self._flush(slot)

    def _stop_slot(self, slot: Slot, now: float) -> None:
        """Kill a worker whose head task must stop; requeue the calls queued behind it."""
        self._doom(slot, now)
        queued = list(slot.outstanding)[1:]
        head = slot.outstanding[0] if slot.outstanding else None
        slot.outstanding.clear()
        self._requeue(queued)
        if head is not None:
            head.worker = None
            if not head.cancelled:
                error = TaskTimeoutError(head.timeout or 0.0, slot.pid, head.name)
                self._fail_or_retry(head, error)

    def _doom(self, slot: Slot, now: float) -> None:
        self._timed = True  # its SIGKILL time is a deadline
        slot.doom(now, KILL_GRACE)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.kill_at is not None:
                if now >= slot.kill_at:
                    slot.signal(signal.SIGKILL)
                    slot.kill_at = None
                continue
            if slot.outstanding:
                timeout = slot.outstanding[0].timeout
                if timeout is not None and now >= slot.head_started + timeout:
                    self._stop_slot(slot, now)

    def _steal_timeout(self) -> int | None:
        when = self._next_steal()
        return None if when is None else _ms_until(when)

    def _poll_timeout(self) -> int | None:
        nearest = self._next_steal()
        for slot in self._slots.values():
            if slot.kill_at is not None:
                when: float | None = slot.kill_at
            elif slot.outstanding and slot.outstanding[0].timeout is not None:
                when = slot.head_started + slot.outstanding[0].timeout
            else:
                continue
            if nearest is None or (when is not None and when < nearest):
                nearest = when
        if nearest is None:
            return None
        return _ms_until(nearest)

    def _on_terminate(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        error = CancelledError("the pool was terminated before this task finished")
        for task in self._drop_all():
            task.cancelled = True
            self._resolve(task, False, error)
        now = time.monotonic()
        for slot in self._slots.values():
            self._doom(slot, now)

    def _drop_all(self) -> list[Task]:
        """Take every task out of the pending queue and the slots."""
        tasks = [t for t in self._pending if not t.cancelled]
        self._pending.clear()
        for slot in self._slots.values():
            tasks.extend(slot.outstanding)
            slot.outstanding.clear()
        while self._inbox:
            item = self._inbox.popleft()
            if type(item) is Task:
                tasks.append(item)
        return tasks

    def _wound_down(self) -> bool:
        """After close/terminate: stop idle workers; True once none is left."""
        if self.state is State.RUNNING:
            return False
        if self.state is State.TERMINATING:
            self._on_terminate()
        elif self.state is State.BROKEN:
            now = time.monotonic()
            for slot in self._slots.values():
                self._doom(slot, now)
        elif self.state is State.CLOSING:
            if self._pending or self._inbox or self._feeders:
                return False
            if any(s.outstanding for s in self._slots.values()):
                return False
            for slot in self._slots.values():
                if not slot.stop_sent and not slot.doomed:
                    slot.stop()
                    self._flush(slot)
        return not self._slots

    # -- dispatch

    def _prefetch(self) -> int:
        service = self._service_time
        if service is None:
            return 1
        return max(1, min(_MAX_PREFETCH, int(_TARGET_QUEUED / max(service, 1e-6)) + 1))

    def _dispatch(self) -> None:
        pending = self._pending
        if not pending or self.state in (State.TERMINATING, State.BROKEN):
            return
        limit = self._prefetch()
        # Refill a worker only once it has drained to half its window: every write to
        # its pipe then carries a batch of calls instead of one or two.
        low = limit // 2
        now = time.monotonic()
        # A worker whose call has run past the steal threshold gets nothing more to
        # queue behind it (not even the calls just stolen back from it).
        busy_since = now - self._steal_after()
        slots = [
            s
            for s in self._slots.values()
            if s.usable()
            and len(s.outstanding) <= low
            and not (s.outstanding and s.head_started < busy_since)
        ]
        if not slots:
            return
        max_tasks = self._config.max_tasks
        touched: set[Slot] = set()
        for depth in range(limit):
            if not pending:
                break
            for slot in slots:
                if not pending:
                    break
                if len(slot.outstanding) > depth:
                    continue
                if max_tasks is not None and slot.sent >= max_tasks:
                    continue
                task = pending.popleft()
                while task.cancelled and pending:
                    task = pending.popleft()
                if task.cancelled:
                    break
                self._assign(slot, task, now)
                touched.add(slot)
        for slot in touched:
            self._flush(slot)

    # -- work stealing

    def _steal_after(self) -> float:
        """How long a head may run before the calls queued behind it are taken back."""
        return max(_STEAL_MIN, 4 * (self._service_time or 0.0))

    def _victims(self) -> list[Slot]:
        """Slots holding queued calls behind a running one while another worker idles."""
        if self._pending:
            return []
        victims = []
        idle = False
        for slot in self._slots.values():
            held = len(slot.outstanding)
            if held > 1:
                if not (slot.stealing or slot.doomed):
                    victims.append(slot)
            elif not held and slot.usable():
                idle = True
        if not (victims and idle) or self.state not in (State.RUNNING, State.CLOSING):
            return []
        return victims

    def _next_steal(self) -> float | None:
        victims = self._victims()
        if not victims:
            return None
        return min(s.head_started for s in victims) + self._steal_after()

    def _steal(self) -> None:
        """Take back the calls queued behind a long-running one, for an idle worker.

        A worker reads its calls ahead, so a long task can hold short ones hostage
        while another worker has nothing to do. We send CANCEL for them and SIGUSR1:
        the worker's handler reads the pipe in the middle of the long call and answers
        CANCELLED for each call it had not started; those go back to the pending queue.
        """
        now = time.monotonic()
        after = self._steal_after()
        for slot in self._victims():
            if now - slot.head_started < after:
                continue
            for task in list(slot.outstanding)[1:]:
                slot.queue(Kind.CANCEL, task.tid)
            slot.stealing = True
            self._flush(slot)
            slot.signal(signal.SIGUSR1)

    def _assign(self, slot: Slot, task: Task, now: float) -> None:
        if task.timeout is not None:
            self._timed = True
        if not slot.outstanding:
            slot.head_started = now
        task.worker = slot
        task.attempts += 1
        slot.sent += 1
        slot.outstanding.append(task)
        slot.queue_call(task)


def _ms_until(when: float) -> int:
    """Milliseconds from now until ``when``, for poll(); capped (a time limit of
    1e10 s or infinity is just a very long wait)."""
    seconds = min(max(0.0, when - time.monotonic()), _MAX_WAIT)
    return int(seconds * 1000) + 1


def _rebuild_error(payload: bytes) -> BaseException:
    """Turn a worker's ErrorReport back into an exception, with its traceback as cause."""
    report: ErrorReport = _serialize.loads(payload)
    exc: BaseException | None = None
    if report.exc is not None:
        try:
            exc = _serialize.loads(report.exc)
        except BaseException:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(report.type_name, report.message)
    exc.__cause__ = RemoteTraceback(report.traceback)
    return exc
