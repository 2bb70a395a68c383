"""The local backend: one scheduler thread that owns every task and every worker.

::

    user threads             scheduler thread                                 workers
    ────────────             ────────────────                                 ───────
    submit(task) ─▶ Inbox ─wake pipe─▶ Watcher.wait(): wake pipe, result pipes,
                                  │      sentinels, writable task pipes;
                                  │      timeout = nearest deadline or steal
                                  ├─ handle events:
                                  │    wake      ─▶ Inbox messages, tasks ─▶ Dispatcher
                                  │    readable  ─▶ Answers.pump ─▶ sink._resolve ─▶ callbacks
                                  │    sentinel  ─▶ Faults.on_death: fail the running
                                  │                 call, requeue the rest
                                  ├─ deadlines:    Deadlines.overdue ─▶ Faults.stop
                                  ├─ replace:      WorkerTable.start_missing
                                  ├─ dispatch or steal: Dispatcher ─▶ slot.outbox ─pipe─▶ run
                                  └─ wound down?   Faults.wound_down
    apply() ─▶ Lender.call_direct: an idle worker, lent to the caller (under the table lock)

The :class:`Engine` builds the parts and passes each the others it needs (constructor
arguments); each part owns its own table (see its module). The parts never import
this module. The facades use the Engine through the interface in
:mod:`procpool._core.backend`.

**Collect.** Workers run calls in arrival order and answer each at once, so the oldest
unanswered call of a slot (its *head*) is the one running. That is how a death, a
timeout or a cancel hits exactly one task with no acknowledgement message.

**The table lock.** The scheduler holds it while it handles a turn's events, never
while it waits; a caller borrowing an idle worker (Lender) takes it in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from procpool._core.callbacks import CallbackRunner
from procpool._core.errors import PoolBrokenError
from procpool._core.state import State
from procpool._core.task import Task
from procpool._engine.answers import Answers
from procpool._engine.deadlines import Deadlines, ms_until
from procpool._engine.dispatch import Dispatcher, Pace
from procpool._engine.faults import Faults
from procpool._engine.inbox import Cancel, Inbox, Terminate
from procpool._engine.lending import Lender
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.workers import WorkerSpec, WorkerTable

__all__ = ["Engine", "WorkerSpec"]

log = logging.getLogger("procpool")


class Engine:
    """The process backend shared by Pool and Executor (see procpool._core.backend)."""

    # Bound to the parts' methods in __init__ (the hot path: no extra call).
    submit: Callable[..., None]
    submit_one: Callable[[Task], None]
    start_feeder: Callable[[Callable[[], None]], None]
    cancel: Callable[[Task], None]
    call_direct: Callable[..., bool]
    not_running_error: Callable[[], BaseException]

    def __init__(self, spec: WorkerSpec) -> None:
        self.callbacks = CallbackRunner()
        self._table_lock = threading.Lock()
        self._inbox = inbox = Inbox()
        self._watcher = watcher = Watcher()
        self._workers = workers = WorkerTable(spec, watcher)
        self._pace = pace = Pace()
        self._deadlines = deadlines = Deadlines(workers)
        self._dispatcher = dispatcher = Dispatcher(inbox, workers, watcher, pace, deadlines.arm)
        self._answers = answers = Answers(workers, dispatcher, watcher, pace)
        self._faults = faults = Faults(inbox, workers, dispatcher, answers, deadlines, watcher)
        self._lender = Lender(
            self._table_lock, inbox, workers, dispatcher, answers, watcher, pace, faults.on_death
        )
        self.owner_pid = inbox.owner_pid
        self.recycles = spec.max_tasks is not None or spec.max_memory is not None
        self.submit = inbox.submit
        self.submit_one = inbox.submit_one
        self.start_feeder = inbox.start_feeder
        self.cancel = inbox.cancel
        self.not_running_error = inbox.not_running_error
        self.call_direct = self._lender.call_direct
        # The first workers start from the caller's thread (see WorkerTable).
        self._start_workers()
        self._thread = threading.Thread(target=self._main, name="procpool-scheduler", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- user side

    @property
    def state(self) -> State:
        return self._inbox.state

    @property
    def broken_error(self) -> BaseException | None:
        return self._inbox.broken_error

    @property
    def processes(self) -> int:
        return self._workers.processes

    def close(self) -> None:
        self._inbox.close()

    def terminate(self) -> None:
        self._inbox.terminate()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the scheduler and the callback thread. False on timeout."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        self._inbox.feeders.join(timeout)
        self.callbacks.stop()
        return True

    def grow(self, processes: int) -> None:
        """Have at least ``processes`` workers, the new ones started now, from the
        calling thread (an Executor starting workers on demand, as the stdlib's)."""
        with self._table_lock:
            if self._workers.processes < processes:
                self._workers.processes = processes
                self._replace()
        self._inbox.wake()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def owns_current_thread(self) -> bool:
        """True on the scheduler or the callback thread (neither can join itself)."""
        return threading.current_thread() is self._thread or self.callbacks.is_current()

    def threads(self) -> list[threading.Thread]:
        """The threads this engine started (the leak checks of the tests read it)."""
        threads = [self._thread, *self._inbox.feeders.threads]
        if self.callbacks._thread is not None:
            threads.append(self.callbacks._thread)
        return threads

    def worker_pids(self) -> list[int]:
        return [slot.pid for slot in self._workers.snapshot()]

    def worker_processes(self) -> list[Any]:
        """The current workers' ``multiprocessing.Process`` objects (any thread: a
        copy of the table; only the scheduler reaps them)."""
        return [slot.process for slot in self._workers.snapshot()]

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every current worker (any thread; Executor.kill_workers).

        Only the scheduler reaps a worker, just before it leaves the table, so a pid
        read here belongs to a live worker or one reaped an instant ago; the deaths are
        then handled like any other (call ``terminate()`` first to fail, not retry).
        """
        for slot in self._workers.snapshot():
            slot.signal(signum)

    # ------------------------------------------------------------ scheduler side

    def _main(self) -> None:
        try:
            self._watcher.watch(self._inbox.wake_fd, self._on_wake)
            while self._step():
                pass
        except BaseException as exc:
            log.exception("procpool scheduler failed; the pool is broken")
            self._faults.break_pool(PoolBrokenError(f"the pool's scheduler failed: {exc!r}"))
            self._workers.kill_all()
        finally:
            self._workers.close()
            self._inbox.close_read_end()

    def _step(self) -> bool:
        """One turn of the loop, in its named steps. False when the pool is done."""
        events = self._watcher.wait(self._timeout())
        with self._table_lock:
            self._watcher.handle(events)
            if self._deadlines.armed:
                self._enforce_deadlines()
            # Replace dead workers only after the whole batch of events: a new pipe may
            # reuse a closed descriptor's number, and a stale event must not reach it.
            if self._workers.missing():
                self._replace()
            self._dispatcher.dispatch_or_steal()
            return self._inbox.state is State.RUNNING or not self._faults.wound_down()

    def _timeout(self) -> int | None:
        """Milliseconds until the nearest deadline or steal; None: wait for an event."""
        when = self._dispatcher.next_steal()
        if self._deadlines.armed:
            deadline = self._deadlines.nearest()
            if deadline is not None and (when is None or deadline < when):
                when = deadline
        return None if when is None else ms_until(when)

    def _on_wake(self, _: None) -> None:
        for message in self._inbox.messages():
            if type(message) is Cancel:
                self._faults.on_cancel(message.task)
            elif type(message) is Terminate:
                self._faults.on_terminate()
        # (No task comes in after terminate() or a break: submitting checks the state
        # under the submit lock, and terminate and a break take what is there.)
        self._dispatcher.extend(self._inbox.tasks())

    def _enforce_deadlines(self) -> None:
        late = self._deadlines.overdue()
        if late:
            now = time.monotonic()
            for slot in late:
                self._faults.stop(slot, now)

    def _replace(self) -> None:
        state = self._inbox.state
        if state is State.TERMINATING or state is State.BROKEN:
            return
        if state is State.CLOSING and not self._dispatcher:
            return
        self._start_workers()

    def _start_workers(self) -> None:
        for slot in self._workers.start_missing():
            self._watch_worker(slot)

    def _watch_worker(self, slot: Slot) -> None:
        self._watcher.watch(slot.result_fd, self._answers.on_readable, slot)
        self._watcher.watch(slot.sentinel, self._faults.on_death, slot)
