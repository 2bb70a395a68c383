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

**Inbox.** Other threads never touch the scheduler's tables: they append a task to the
inbox (or a control message, cancel/close/terminate, to a deque of its own) and write
one byte to the wake pipe (only when no byte is already pending, so a burst of submits
costs one wake-up).

**Dispatch.** A slot receives calls only once it has said READY. Each slot may hold a
bounded number of calls (prefetch), sized from the measured service time: about 10 ms
of queued work per worker, between 1 and 1024 calls. That outlasts the 5 ms a busy
user thread may hold the GIL before this thread gets it back, so short calls never
leave a worker idle waiting for the parent; calls of 10 ms or more go one at a time,
the next as the previous one is answered (and work stealing takes back calls that
wait too long behind a long one).

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

import dataclasses
import itertools
import logging
import multiprocessing.connection
import os
import select
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from procpool._core.callbacks import CallbackRunner
from procpool._core.errors import PoolBrokenError, fresh_copy
from procpool._core.state import State
from procpool._core.task import TID_STEP, Task
from procpool._engine.lending import Lending
from procpool._engine.pipes import _parent_fds, close_parent_fd, parent_pipe
from procpool._engine.slot import Slot
from procpool._engine.zygote import Zygote
from procpool._worker import serialize
from procpool._worker.main import WorkerConfig

log = logging.getLogger("procpool")

_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_RUNNING = State.RUNNING


class _Cancel:
    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task


class _Close:
    __slots__ = ()


class _Terminate:
    __slots__ = ()


class Engine(Lending):
    """The process backend shared by Pool and Executor."""

    def __init__(
        self,
        ctx: Any,
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: Iterable[Any],
        max_tasks: int | None = None,
        max_memory: int | None = None,
        init_logger: str = "procpool",
    ) -> None:
        # The initializer travels as our own pickle (a lambda works); initargs go to
        # the Process as they are, so locks and events can be shared by inheritance.
        init_blob = None
        if initializer is not None:
            init_blob = serialize.dumps(initializer)
        # Workers watch the read end of this pipe; only this process holds the write
        # end, so its death (even by SIGKILL) is an EOF in every worker.
        alive_r, self._alive_w = os.pipe()
        _parent_fds.add(self._alive_w)
        self._alive_r = multiprocessing.connection.Connection(alive_r, writable=False)
        self._config = WorkerConfig(
            init_blob, tuple(initargs), max_tasks, max_memory, self._alive_r, init_logger
        )
        self._ctx = ctx
        self.processes = processes
        self.callbacks = CallbackRunner()
        self.state = State.RUNNING
        self.broken_error: BaseException | None = None
        # Tasks, and apart from them the messages about them (a cancel, the end).
        self._inbox: deque[Task] = deque()
        self._messages: deque[_Cancel | _Close | _Terminate] = deque()
        self._submit_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._wake_r, self._wake_w = parent_pipe()
        os.set_blocking(self._wake_r, False)
        # The write end lives as long as this object, not the scheduler: a cancel(),
        # close() or terminate() after the scheduler ended must find this pipe (a
        # write to a closed end fails quietly), never a reused descriptor number.
        self.owner_pid = os.getpid()
        weakref.finalize(self, _close_in_owner, self._wake_w, self.owner_pid)
        self._wake_pending = False
        self._feeders = 0
        self._feeder_threads: list[threading.Thread] = []
        # next() on it is atomic: no lock needed. Multiples of TID_STEP: the items of a
        # batch answer as tid + offset.
        self._tids = itertools.count(TID_STEP, TID_STEP)
        self._last_lent: Slot | None = None
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
        # gives a child that deadlocks on it (see also serialize.import_lock).
        self._zygote: Zygote | None = None
        # Replacements are started by the scheduler thread. Under fork, a fork of this
        # process would copy the locks the other threads hold; they come from a
        # single-threaded copy of it instead, which the first worker forks as it
        # starts (see Zygote).
        self._carry: Zygote | None = None
        if _start_method(ctx) == "fork":
            self._carry = Zygote()
        zygote = self._carry
        self._replenish()
        self._zygote = zygote
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
                task.tid = next(self._tids)
            self._inbox.extend(tasks)
        self._wake()

    def submit_one(self, task: Task) -> None:
        """submit() for one task (apply_async: the most frequent call of all)."""
        with self._submit_lock:
            if self.state is not _RUNNING:
                raise self._not_running_error()
            task.tid = next(self._tids)
            self._inbox.append(task)
        if not self._wake_pending:
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
        self._messages.append(_Cancel(task))
        self._wake()

    def close(self) -> None:
        with self._submit_lock:
            if self.state is State.RUNNING:
                self.state = State.CLOSING
        self._messages.append(_Close())
        self._wake()

    def terminate(self) -> None:
        with self._submit_lock:
            if self.state is not State.BROKEN:
                self.state = State.TERMINATING
        self._messages.append(_Terminate())
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

    def owns_current_thread(self) -> bool:
        """True on the scheduler or the callback thread (neither can join itself)."""
        return threading.current_thread() is self._thread or self.callbacks.is_current()

    def worker_pids(self) -> list[int]:
        return [slot.pid for slot in list(self._slots.values())]

    def worker_processes(self) -> list[Any]:
        """The current workers' ``multiprocessing.Process`` objects (any thread: a
        copy of the table, as worker_pids reads it; only the scheduler reaps them)."""
        return [slot.process for slot in list(self._slots.values())]

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
            return fresh_copy(self.broken_error)
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
            # No worker starts any more: let go of the initializer and initargs now
            # (a Queue or a Manager proxy in them), not when a gc finds this engine.
            self._config = dataclasses.replace(self._config, init_blob=None, initargs=())
            if self._zygote is not None:
                self._zygote.close()
            close_parent_fd(self._wake_r)
            close_parent_fd(self._alive_w)
            self._alive_r.close()

    def _step(self) -> bool:
        """One turn of the loop: wait, handle what happened. False when finished."""
        timed = self._timed
        events = self._poll.poll(self._poll_timeout() if timed else self._steal_timeout())
        # The table lock is held while events are handled, never while polling: a
        # caller borrowing an idle worker (call_direct) takes it in between.
        with self._table_lock:
            return self._handle(events, timed)

    def _handle(self, events: list[tuple[int, int]], timed: bool) -> bool:
        for fd, _ in events:
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
        messages = self._messages
        while messages:
            message = messages.popleft()
            if type(message) is _Cancel:
                self._on_cancel(message.task)
            elif type(message) is _Terminate:
                self._on_terminate()
        # (No task comes in after terminate() or a break: submitting checks the state
        # under the submit lock, and _on_terminate/_break take what is here.)
        inbox = self._inbox
        pending = self._pending
        while inbox:
            pending.append(inbox.popleft())

    # -- workers

    def _replenish(self) -> None:
        if self.state in (State.TERMINATING, State.BROKEN):
            return
        if self.state is State.CLOSING and not self._pending:
            return
        while len(self._slots) < self.processes:
            slot = Slot(self._ctx, self._config, self._zygote, self._carry)
            self._carry = None
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


def _start_method(ctx: Any) -> str | None:
    get = getattr(ctx, "get_start_method", None)
    return get() if get is not None else None


def _close_in_owner(fd: int, owner_pid: int) -> None:
    """Close a parent-side descriptor, but only in the process that opened it.

    A forked worker inherits a copy of every live pool object; when one of them is
    collected there, its number may already belong to a different file of the child.
    """
    if os.getpid() == owner_pid:
        close_parent_fd(fd)
