"""Which worker gets which call: the pending queue, prefetch and work stealing.

Owner: :class:`Pace` owns the measured service time (answers report each call's; the
prefetch depth and the steal threshold derive from it). :class:`Dispatcher` owns the
queue of calls that no worker holds (submitted, requeued after a death, stolen back,
a batch's rest), and decides which worker gets which of them. Both run on the
scheduler thread (and the dispatcher's ``assign`` for a borrowing caller under the
table lock, see lending).

**Prefetch.** A slot receives calls only once it has said READY. Each slot may hold a
bounded number of calls, sized from the service time: about 10 ms of queued work per
worker, between 1 and 1024 calls. That outlasts the 5 ms a busy user thread may hold
the GIL before the scheduler gets it back, so short calls never leave a worker idle
waiting for the parent; calls of 10 ms or more go one at a time, the next as the
previous one is answered (and stealing takes back calls that wait too long behind a
long one).
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable

from procpool._core.state import State
from procpool._core.task import DISCARD, Task
from procpool._engine.inbox import Inbox
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.workers import WorkerTable
from procpool._worker.wire import Kind

# Queued work per worker: more than the 5 ms GIL switch interval, for which a busy
# user thread can keep the scheduler from refilling.
_TARGET_QUEUED = 0.010
_MAX_PREFETCH = 1024
_STEAL_MIN = 0.005
_STOPPED = (State.TERMINATING, State.BROKEN)


class Pace:
    """The service time of a call (an exponential moving average of the answers')."""

    __slots__ = ("service_time",)

    def __init__(self) -> None:
        self.service_time: float | None = None

    def note(self, seconds: float) -> None:
        prev = self.service_time
        self.service_time = seconds if prev is None else prev + 0.2 * (seconds - prev)

    def prefetch(self) -> int:
        service = self.service_time
        if service is None:
            return 1
        return max(1, min(_MAX_PREFETCH, int(_TARGET_QUEUED / max(service, 1e-6)) + 1))

    def steal_after(self) -> float:
        """How long a head may run before the calls queued behind it are taken back."""
        return max(_STEAL_MIN, 4 * (self.service_time or 0.0))


class Dispatcher:
    """The pending calls, and handing them to workers."""

    def __init__(
        self, inbox: Inbox, workers: WorkerTable, watcher: Watcher, pace: Pace,
        arm_deadlines: Callable[[], None],
    ) -> None:
        self._inbox = inbox
        self._workers = workers
        self._watcher = watcher
        self._pace = pace
        self._arm = arm_deadlines
        self._pending: deque[Task] = deque()

    # -- the queue

    def __len__(self) -> int:
        return len(self._pending)

    def queue_view(self) -> deque[Task]:
        """The queue, to look at only (the lending hot path binds it)."""
        return self._pending

    def extend(self, tasks: list[Task]) -> None:
        self._pending.extend(tasks)

    def push_front(self, task: Task) -> None:
        self._pending.appendleft(task)

    def requeue(self, tasks: list[Task]) -> None:
        """Put a stopped or dead worker's calls back, first in line, in their order
        (none of them started there: they are waiting again, not attempted)."""
        for task in reversed(tasks):
            task.worker = None
            if task.attempts:
                task.attempts -= 1
            if task.items is not None and task.answered:
                task = self.part(task, task.answered)  # what a batch has not yet run
            self._pending.appendleft(task)

    def part(self, batch: Task, start: int, stop: int | None = None) -> Task:
        """A new task for some of a batch's items, with a task id of its own."""
        part = batch.part(start, stop)
        part.tid = self._inbox.next_tid()
        part.abandoned = batch.abandoned
        return part

    def running_part(self, outstanding: list[Task]) -> Task | None:
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
            singles = [self.part(head, i, i + 1) for i in range(len(head.items))]
            outstanding[:0] = singles
            head.sink = DISCARD
            return None
        offset = head.answered
        item = self.part(head, offset, offset + 1)
        item.attempts = head.attempts
        if offset + 1 < len(head.items):
            outstanding.insert(0, self.part(head, offset + 1))
        head.sink = DISCARD
        return item

    def take_all(self) -> list[Task]:
        """Empty the queue; the calls whose outcome still matters."""
        tasks = [t for t in self._pending if not t.abandoned]
        self._pending.clear()
        return tasks

    # -- handing out

    def dispatch_or_steal(self) -> None:
        if self._pending:
            self._dispatch()
        else:
            self._steal()

    def _dispatch(self) -> None:
        pending = self._pending
        if self._inbox.state in _STOPPED:
            return
        limit = self._pace.prefetch()
        # A wide window (short calls) is refilled once it has drained to half: every
        # write then carries a batch of calls. A narrow one (calls of a millisecond or
        # more) is topped up as soon as a call finishes, so the worker never waits.
        low = limit // 2 if limit >= 8 else limit - 1
        now = time.monotonic()
        # A worker whose call has run past the steal threshold gets nothing more to
        # queue behind it (not even the calls just stolen back from it).
        busy_since = now - self._pace.steal_after()
        slots = [
            s
            for s in self._workers
            if s.usable()
            and len(s.outstanding) <= low
            and not (s.outstanding and s.head_started < busy_since)
        ]
        if not slots:
            return
        max_tasks = self._workers.config.max_tasks
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
                if task.timeout is not None:
                    self._arm()
                slot.assign(task, now)
                touched.add(slot)
        for slot in touched:
            self._watcher.flush(slot)

    def _victims(self) -> list[Slot]:
        """Slots holding queued calls behind a running one while another worker idles."""
        if self._pending:
            return []
        victims = []
        idle = False
        for slot in self._workers:
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
        if not (victims and idle) or self._inbox.state not in (State.RUNNING, State.CLOSING):
            return []
        return victims

    def next_steal(self) -> float | None:
        """When the next steal falls due (None: no call waits behind a running one)."""
        victims = self._victims()
        if not victims:
            return None
        return min(s.head_started for s in victims) + self._pace.steal_after()

    def _steal(self) -> None:
        """Take back the calls queued behind a long-running one, for an idle worker.

        A worker reads its calls ahead, so a long task can hold short ones hostage
        while another worker has nothing to do. We send CANCEL for them and SIGUSR1:
        the worker's handler reads the pipe in the middle of the long call and answers
        CANCELLED for each call it had not started; those go back to the pending queue.
        """
        now = time.monotonic()
        after = self._pace.steal_after()
        for slot in self._victims():
            if now - slot.head_started < after:
                continue
            head = slot.outstanding[0]
            if head.items is not None and len(head.items) - head.answered > 1:
                slot.queue(Kind.CANCEL, head.tid)  # cut it after the running item
            for task in list(slot.outstanding)[1:]:
                slot.queue(Kind.CANCEL, task.tid)
            slot.stealing = True
            self._watcher.flush(slot)
            slot.signal(signal.SIGUSR1)
