"""A lone blocking ``apply`` on a borrowed worker (part of the scheduler).

When a caller blocks in ``Pool.apply``, nothing is queued and a worker is idle, the
scheduler *lends* that worker to the calling thread, which writes the call and reads
the answer itself: no thread hand-off on the round trip. See docs/architecture.md.

Owner: :class:`Lender` owns which worker was lent last (a blocking apply in a loop
gets the same one) and the watch-or-sleep credit of borrowing callers. A lent slot is
marked ``lent``; everything else stays the scheduler's parts', reached under the
engine's table lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from procpool._core.state import State
from procpool._core.task import Task
from procpool._engine.answers import Answers
from procpool._engine.dispatch import Dispatcher, Pace
from procpool._engine.inbox import Inbox
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.workers import WorkerTable
from procpool._worker.main import spin
from procpool._worker.wire import Kind

# A call lent to an idle worker must fit the pipe in one write.
_DIRECT_MAX = 1 << 16
# How long the caller of a short direct call watches for the answer before sleeping;
# the credit a watch that saw the answer earns (a miss costs two), up to _SPIN_CREDIT;
# how often a caller out of credit tries again, and for how long (see _wait_direct).
_SPIN = 200e-6
_SPIN_CREDIT = 4
_PROBE_EVERY = 16
_PROBE = 1e-3


class Lender:
    """Lends an idle worker to a caller blocked on one call (``call_direct``)."""

    def __init__(
        self,
        table_lock: threading.Lock,
        inbox: Inbox,
        workers: WorkerTable,
        dispatcher: Dispatcher,
        answers: Answers,
        watcher: Watcher,
        pace: Pace,
        on_death: Callable[[Slot], None],
    ) -> None:
        self._table_lock = table_lock
        self._inbox = inbox
        self._workers = workers
        self._dispatcher = dispatcher
        self._answers = answers
        self._watcher = watcher
        self._pace = pace
        self._on_death = on_death
        self._last_lent: Slot | None = None
        # A blocking apply in a loop is the hot path here: the tables it only looks at
        # are bound once, as read-only views (their owners still change them).
        self._waiting = inbox.queue_view()
        self._pending = dispatcher.queue_view()
        self._slots = workers.table_view()
        self._watched = watcher.table_view()
        self._pump = answers.pump
        # Whether watching the direct pipe pays (see _wait_direct); how many direct
        # calls there were. (Written by borrowing threads without a lock: a lost
        # update only shifts a decision by one call.)
        self.spin_credit = _SPIN_CREDIT
        self.direct_calls = 0

    def call_direct(self, task: Task, queued: bool = False) -> bool:
        """Run one call on an idle worker from the caller's thread (a blocking apply).

        The scheduler lends the caller an idle worker: the caller writes the call and
        the worker answers on a pipe of its own that only the borrowing caller reads,
        so a lone ``apply`` costs no thread hand-off and never wakes the scheduler.
        Everything else stays the scheduler's: on a death, a Ctrl-C or anything
        unusual the worker is handed back with the call as its head, and the normal
        machinery finishes the job. False when no worker can be lent (the call then
        goes through ``submit``).

        ``queued``: the task was submitted and is waiting in the inbox (a Future whose
        ``result()`` is asked at once); it is taken from there if it is alone in it
        and no worker has it yet. False when it is not: it then goes its normal way.
        """
        slot = self._lend(task, queued)
        if slot is None:
            return False
        try:
            self._wait_direct(slot, task)
        finally:
            self._give_back(slot)
        return True

    def _lend(self, task: Task, queued: bool) -> Slot | None:
        if task.timeout is not None or task.fds or len(task.payload) > _DIRECT_MAX:
            return None
        if not self._table_lock.acquire(False):
            return None
        try:
            # (The scheduler takes from the inbox only under the table lock, and other
            # threads only append to it: a task found alone at its head stays there.)
            inbox = self._inbox
            waiting = self._waiting
            alone = len(waiting) == 1 and waiting[0] is task if queued else not waiting
            if inbox.state is not State.RUNNING or self._pending or not alone:
                return None
            slot = self._last_lent
            if slot is None or not slot.lendable() or slot.pid not in self._slots:
                slot = self._workers.lendable()
                if slot is None:
                    return None
                self._last_lent = slot
            if queued:
                inbox.take_only()
            task.tid = inbox.next_tid()
            slot.lent = True
            slot.assign(task, time.monotonic(), Kind.CALL_WAITED)
            slot.flush()
        finally:
            self._table_lock.release()
        return slot

    def _wait_direct(self, slot: Slot, task: Task) -> None:
        poller = slot.direct_poller()
        direct_fd = slot.direct_fd
        # Short calls are answered sooner than a sleeping thread wakes up (tens of
        # microseconds here): watch the pipe for a moment before sleeping on it. Do
        # it when the measured service time is short, and also while watching has
        # paid lately: the service time of a caller that sleeps includes its own
        # wake-up, and without the credit such a pool would never watch again (with
        # spawn, apply was sometimes stuck at ~220 µs a call that way). Watches that
        # miss use the credit up; out of it, one call in _PROBE_EVERY tries again, for
        # longer: long enough to see an answer from a worker that had to be woken
        # too (a worker stops watching its own pipe once the caller is slow to come
        # back, so both sides must watch in the same round to get out of that).
        self.direct_calls += 1
        credit = self.spin_credit
        service = self._pace.service_time
        watch = 0.0
        if credit <= 0 and self.direct_calls % _PROBE_EVERY == 0:
            watch = _PROBE
        elif credit > 0 or (service is not None and service < _SPIN):
            watch = _SPIN
        if watch:
            if spin(poller, time.perf_counter() + watch):
                self.spin_credit = min(_SPIN_CREDIT, max(credit, 0) + 1)
            else:
                self.spin_credit = credit - 2
        while task.worker is slot:
            if not any(fd == direct_fd for fd, _ in poller.poll()):
                return  # the worker died: the scheduler will say so
            with self._table_lock:
                more = self._pump(slot, slot.direct_reader)
            if more is False:
                return  # end of file: the worker is gone

    def _give_back(self, slot: Slot) -> None:
        with self._table_lock:
            slot.lent = False
            # The scheduler stops watching a lent worker that dies (see Faults.on_death)
            # and leaves it to the borrower, who sees the death too and ends up here.
            died = slot.pid in self._slots and slot.sentinel not in self._watched
            if died:
                self._watcher.watch(slot.sentinel, self._on_death, slot)
            # It needs waking only if there is work for this worker or a state to act on.
            needed = died or bool(self._pending) or self._inbox.state is not State.RUNNING
        if needed:
            self._inbox.wake()
