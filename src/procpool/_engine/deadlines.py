"""Deadlines: task time limits, and the SIGKILL time of a worker being stopped.

Owner: :class:`Deadlines` owns whether any deadline exists yet (``armed``: until a
task with a time limit is dispatched or a worker is doomed, each turn of the loop
skips these scans), and dooms workers: SIGTERM now, SIGKILL after a grace period
(``Slot.kill_at``). The time limit itself is the head task's ``timeout`` from the
moment it started (``Slot.head_started``). Scheduler thread only.

Nothing polls on a timer: the scheduler's wait ends at the nearest deadline.
"""

from __future__ import annotations

import signal
import time

from procpool._engine.slot import Slot
from procpool._engine.workers import WorkerTable

KILL_GRACE = 0.3
_MAX_WAIT = 3600.0


def ms_until(when: float) -> int:
    """Milliseconds from now until ``when``, for poll(); capped (a time limit of
    1e10 s or infinity is just a very long wait)."""
    seconds = min(max(0.0, when - time.monotonic()), _MAX_WAIT)
    return int(seconds * 1000) + 1


class Deadlines:
    """Time limits and doomed workers."""

    def __init__(self, workers: WorkerTable) -> None:
        self._workers = workers
        self.armed = False

    def arm(self) -> None:
        """A deadline exists from now on (a task with a time limit was dispatched)."""
        self.armed = True

    def doom(self, slot: Slot, now: float) -> None:
        """Stop a worker: SIGTERM now, SIGKILL if it is still there after the grace."""
        self.armed = True  # its SIGKILL time is a deadline
        slot.doom(now, KILL_GRACE)

    def overdue(self) -> list[Slot]:
        """SIGKILL the doomed workers whose grace is over; return the workers whose
        running task is past its time limit (to be stopped)."""
        now = time.monotonic()
        late = []
        for slot in self._workers.snapshot():
            if slot.kill_at is not None:
                if now >= slot.kill_at:
                    slot.signal(signal.SIGKILL)
                    slot.kill_at = None
                continue
            if slot.outstanding:
                timeout = slot.outstanding[0].timeout
                if timeout is not None and now >= slot.head_started + timeout:
                    late.append(slot)
        return late

    def nearest(self) -> float | None:
        """The nearest deadline (a monotonic time), None if there is none."""
        nearest = None
        for slot in self._workers:
            if slot.kill_at is not None:
                when: float | None = slot.kill_at
            elif slot.outstanding and slot.outstanding[0].timeout is not None:
                when = slot.head_started + slot.outstanding[0].timeout
            else:
                continue
            if nearest is None or (when is not None and when < nearest):
                nearest = when
        return nearest
