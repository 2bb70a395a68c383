"""Dispatch and work stealing: which worker gets which call (part of the scheduler).

Runs on the scheduler thread only, as a part of :class:`procpool._engine.Engine`.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from typing import TYPE_CHECKING

from procpool._core.state import State
from procpool._core.task import Task
from procpool._engine.slot import Slot
from procpool._worker.wire import HEADER, Kind

if TYPE_CHECKING:
    from procpool._worker.main import WorkerConfig

# Queued work per worker: more than the 5 ms GIL switch interval, for which a busy
# user thread can keep the scheduler from refilling (see the _engine docstring).
_TARGET_QUEUED = 0.010
_MAX_PREFETCH = 1024
_STEAL_MIN = 0.005
_MAX_WAIT = 3600.0
pack_header = HEADER.pack


def ms_until(when: float) -> int:
    """Milliseconds from now until ``when``, for poll(); capped (a time limit of
    1e10 s or infinity is just a very long wait)."""
    seconds = min(max(0.0, when - time.monotonic()), _MAX_WAIT)
    return int(seconds * 1000) + 1


class Dispatching:
    """Prefetch sizing, dispatch and work stealing."""

    if TYPE_CHECKING:  # provided by Engine
        state: State
        _config: WorkerConfig
        _pending: deque[Task]
        _slots: dict[int, Slot]
        _service_time: float | None
        _timed: bool

        def _flush(self, slot: Slot) -> None: ...

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
        # A wide window (short calls) is refilled once it has drained to half: every
        # write then carries a batch of calls. A narrow one (calls of a millisecond or
        # more) is topped up as soon as a call finishes, so the worker never waits.
        low = limit // 2 if limit >= 8 else limit - 1
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
        # Round robin by depth, from the shallowest slot's (a deep one is skipped
        # until the others have caught up).
        for depth in range(min(len(s.outstanding) for s in slots), limit):
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
                while task.abandoned and pending:
                    task = pending.popleft()
                if task.abandoned:
                    break
                self._assign(slot, task, now)
                touched.add(slot)
        for slot in touched:
            self._flush(slot)

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
            if held == 1:  # a batch counts as the calls it has not started
                head = slot.outstanding[0]
                if head.items is not None:
                    held = len(head.items) - head.answered
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
            head = slot.outstanding[0]
            if head.items is not None and len(head.items) - head.answered > 1:
                slot.queue(Kind.CANCEL, head.tid)  # cut it after the running item
            for task in list(slot.outstanding)[1:]:
                slot.queue(Kind.CANCEL, task.tid)
            slot.stealing = True
            self._flush(slot)
            slot.signal(signal.SIGUSR1)

    def _assign(self, slot: Slot, task: Task, now: float, kind: int = Kind.CALL) -> None:
        if task.timeout is not None:
            self._timed = True
        if not slot.outstanding:
            slot.head_started = now
        task.worker = slot
        task.attempts += 1
        slot.sent += 1
        slot.outstanding.append(task)
        if task.fds or task.items is not None:
            slot.queue_call(task, kind)
        else:  # (queue_call's common case, inline: this runs once per task)
            payload = task.payload
            slot.outbox.append(pack_header(len(payload), kind, task.tid) + payload)

    def _steal_timeout(self) -> int | None:
        when = self._next_steal()
        return None if when is None else ms_until(when)

    def _note_service_time(self, seconds: float) -> None:
        # (Engine._pump does the same inline for the result of a running call.)
        prev = self._service_time
        self._service_time = seconds if prev is None else prev + 0.2 * (seconds - prev)
