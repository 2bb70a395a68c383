"""Deaths, stopping a running call (time limit, cancel), breaking and winding down.

Owner: :class:`Faults` owns no table; it owns the decisions. A worker died: its pipe is
drained first (results sent just before dying still count), then its running call
fails with WorkerLostError (or is retried), the calls queued behind it go back to the
front of the dispatcher's queue, and the worker table counts a start failure if it
died before READY. A call must stop (past its time limit, cancelled while running):
its worker is doomed and the same happens, with TaskTimeoutError. Terminate and a
broken pool fail every call left; close() lets the workers finish, then stops them.
Scheduler thread only.
"""

from __future__ import annotations

import time

from procpool._core.errors import CancelledError, TaskTimeoutError, WorkerLostError, fresh_copy
from procpool._core.state import State
from procpool._core.task import Task
from procpool._engine.answers import Answers
from procpool._engine.deadlines import Deadlines
from procpool._engine.dispatch import Dispatcher
from procpool._engine.inbox import Inbox
from procpool._engine.outcome import resolve
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.workers import WorkerTable
from procpool._worker.wire import Kind


class Faults:
    """What the scheduler does when a worker dies, a call must stop, or the pool ends."""

    def __init__(
        self,
        inbox: Inbox,
        workers: WorkerTable,
        dispatcher: Dispatcher,
        answers: Answers,
        deadlines: Deadlines,
        watcher: Watcher,
    ) -> None:
        self._inbox = inbox
        self._workers = workers
        self._dispatcher = dispatcher
        self._answers = answers
        self._deadlines = deadlines
        self._watcher = watcher
        self._terminated = False

    def on_death(self, slot: Slot) -> None:
        """The watcher's handler for a worker's sentinel."""
        if slot.lent:
            # Its borrower (see lending) is watching it too and hands it back at once;
            # the death is handled then.
            self._watcher.unwatch(slot.sentinel)
            return
        self._answers.drain(slot)
        exitcode = slot.reap()
        outstanding = list(slot.outstanding)
        # A worker that died before it read its next call (killed while idle, say)
        # had not started it: the call goes to another worker, not to its error.
        started = bool(outstanding) and not slot.never_read(outstanding[0])
        self._workers.forget(slot)
        slot.outstanding.clear()
        if started and not slot.retiring:
            head = self._dispatcher.running_part(outstanding)
            if head is not None:
                self._fail_or_retry(head, WorkerLostError(slot.pid, exitcode, head.name))
        self._dispatcher.requeue(outstanding)
        if not slot.ready and not slot.doomed and self._inbox.state is not State.TERMINATING:
            error = self._workers.note_start_failure(slot, exitcode)
            if error is not None:
                self.break_pool(error)

    def break_pool(self, error: BaseException) -> None:
        """Refuse new work and fail every call left with ``error``."""
        self._inbox.break_(error)
        for task in self._drop_all():
            resolve(task, False, fresh_copy(error))

    def _fail_or_retry(self, task: Task, error: BaseException) -> None:
        if task.abandoned:
            return
        if task.attempts <= task.retries and self._inbox.state in (State.RUNNING, State.CLOSING):
            self._dispatcher.push_front(task)
        else:
            resolve(task, False, error)

    def on_cancel(self, task: Task) -> None:
        task.abandoned = True
        slot = task.worker
        if slot is None or task not in slot.outstanding:
            return  # pending (dispatch skips it) or already finished
        if slot.outstanding[0] is task:
            self.stop(slot, time.monotonic())
        else:
            slot.queue(Kind.CANCEL, task.tid)
            self._watcher.flush(slot)

    def stop(self, slot: Slot, now: float) -> None:
        """Kill a worker whose head task must stop; requeue the calls queued behind it."""
        self._deadlines.doom(slot, now)
        queued = list(slot.outstanding)
        slot.outstanding.clear()
        head = self._dispatcher.running_part(queued) if queued else None
        self._dispatcher.requeue(queued)
        if head is not None and not head.abandoned:
            error = TaskTimeoutError(head.timeout or 0.0, slot.pid, head.name)
            self._fail_or_retry(head, error)

    def on_terminate(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        error = CancelledError("the pool was terminated before this task finished")
        for task in self._drop_all():
            task.abandoned = True
            resolve(task, False, error)
        now = time.monotonic()
        for slot in self._workers:
            self._deadlines.doom(slot, now)

    def _drop_all(self) -> list[Task]:
        """Take every task out of the dispatcher's queue, the workers and the inbox."""
        tasks = self._dispatcher.take_all()
        for slot in self._workers:
            tasks.extend(slot.outstanding)
            slot.outstanding.clear()
        tasks.extend(self._inbox.tasks())
        return tasks

    def wound_down(self) -> bool:
        """After close/terminate/a break: stop idle workers; True once none is left."""
        state = self._inbox.state
        if state is State.RUNNING:
            return False
        if state is State.TERMINATING:
            self.on_terminate()
        elif state is State.BROKEN:
            now = time.monotonic()
            for slot in self._workers:
                self._deadlines.doom(slot, now)
        elif state is State.CLOSING:
            if self._dispatcher or self._inbox.has_work():
                return False
            if any(s.outstanding for s in self._workers):
                return False
            for slot in self._workers:
                if not slot.stop_sent and not slot.doomed:
                    slot.stop()
                    self._watcher.flush(slot)
        return not len(self._workers)
