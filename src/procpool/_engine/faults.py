"""Deaths, time limits, cancellation and shutdown (part of the scheduler).

Runs on the scheduler thread only, as a part of :class:`procpool._engine.Engine`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from procpool._core.errors import (
    CancelledError,
    PoolBrokenError,
    TaskTimeoutError,
    WorkerLostError,
    fresh_copy,
)
from procpool._core.state import State
from procpool._core.task import DISCARD, Task
from procpool._engine.dispatching import Dispatching, ms_until
from procpool._engine.slot import Slot
from procpool._worker.wire import Kind

if TYPE_CHECKING:
    import threading

log = logging.getLogger("procpool")

KILL_GRACE = 0.3
MAX_START_FAILURES = 3
MAX_START_KILLS = 20
_EXTERNAL_KILLS = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP)


class FaultHandling(Dispatching):
    """What the scheduler does when a worker dies, a call overruns, or the pool ends."""

    if TYPE_CHECKING:  # provided by Engine
        broken_error: BaseException | None
        _submit_lock: threading.Lock
        _inbox: deque[Task]
        _start_failures: int
        _start_kills: int
        _last_init_error: str | None
        _terminated: bool
        _feeders: int

        def _drain(self, slot: Slot) -> None: ...
        def _unwatch(self, fd: int) -> None: ...
        def _forget(self, slot: Slot) -> None: ...
        def _resolve(self, task: Task, ok: bool, value: Any) -> None: ...
        def _part(self, batch: Task, start: int, stop: int | None = None) -> Task: ...

    def _on_death(self, slot: Slot) -> None:
        if slot.lent:
            # Its borrower (Engine.call_direct) is watching it too and hands it back at
            # once; the death is handled then.
            self._unwatch(slot.sentinel)
            return
        self._drain(slot)
        exitcode = slot.reap()
        self._forget(slot)
        outstanding = list(slot.outstanding)
        slot.outstanding.clear()
        if outstanding and not slot.retiring:
            head = self._running_part(outstanding)
            if head is not None:
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
            self._resolve(task, False, fresh_copy(error))

    def _requeue(self, tasks: list[Task]) -> None:
        for task in reversed(tasks):
            task.worker = None
            if task.items is not None and task.answered:
                task = self._part(task, task.answered)  # what a batch has not yet run
            self._pending.appendleft(task)

    def _running_part(self, outstanding: list[Task]) -> Task | None:
        """Take the head call out of ``outstanding`` (a stopped or dead worker's list):
        for a batch, just its running item, with the rest put back first in line.

        None for a batch that was not even unpickled: any item may be to blame, so
        they are all put back, one call each (see Task).
        """
        head = outstanding.pop(0)
        head.worker = None
        if head.items is None:
            return head
        if not head.unpacked:
            singles = [self._part(head, i, i + 1) for i in range(len(head.items))]
            outstanding[:0] = singles
            head.sink = DISCARD
            return None
        offset = head.answered
        item = self._part(head, offset, offset + 1)
        item.attempts = head.attempts
        if offset + 1 < len(head.items):
            outstanding.insert(0, self._part(head, offset + 1))
        head.sink = DISCARD
        return item

    def _fail_or_retry(self, task: Task, error: BaseException) -> None:
        if task.abandoned:
            return
        if task.attempts <= task.retries and self.state in (State.RUNNING, State.CLOSING):
            self._pending.appendleft(task)
        else:
            self._resolve(task, False, error)

    def _on_cancel(self, task: Task) -> None:
        task.abandoned = True
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
        queued = list(slot.outstanding)
        slot.outstanding.clear()
        head = self._running_part(queued) if queued else None
        self._requeue(queued)
        if head is not None and not head.abandoned:
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
        return ms_until(nearest)

    def _on_terminate(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        error = CancelledError("the pool was terminated before this task finished")
        for task in self._drop_all():
            task.abandoned = True
            self._resolve(task, False, error)
        now = time.monotonic()
        for slot in self._slots.values():
            self._doom(slot, now)

    def _drop_all(self) -> list[Task]:
        """Take every task out of the pending queue and the slots."""
        tasks = [t for t in self._pending if not t.abandoned]
        self._pending.clear()
        for slot in self._slots.values():
            tasks.extend(slot.outstanding)
            slot.outstanding.clear()
        while self._inbox:
            tasks.append(self._inbox.popleft())
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
