"""The worker table: which worker processes the pool has, starting and forgetting them.

Owner: the WorkerTable owns the table of slots (pid -> :class:`Slot`), the number of
workers wanted (``processes``), the workers' configuration (the initializer and its
arguments, the recycling limits, the *alive* pipe whose EOF tells every worker that
the parent died), the fork zygote, and the start-failure rule: workers that die before
they are ready, enough of them in a row, break the pool.

Only the scheduler thread changes the table, or another thread holding the engine's
table lock (an Executor starting a worker on demand). Other threads read copies
(``pids()``, ``processes_list()``).
"""

from __future__ import annotations

import dataclasses
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from procpool._core.errors import PoolBrokenError
from procpool._engine.pipes import _parent_fds, close_parent_fd
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.zygote import Zygote
from procpool._worker import serialize
from procpool._worker.main import WorkerConfig

MAX_START_FAILURES = 3
MAX_START_KILLS = 20
_EXTERNAL_KILLS = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a pool's workers are: the start method (a multiprocessing context), how
    many, what each runs first (``initializer(*initargs)``, failures logged to
    ``init_logger``), and after how many tasks or how much memory one is replaced."""

    ctx: Any
    processes: int
    initializer: Callable[..., object] | None = None
    initargs: Iterable[Any] = ()
    max_tasks: int | None = None
    max_memory: int | None = None
    init_logger: str = "procpool"


class WorkerTable:
    """The pool's worker processes, as slots."""

    def __init__(self, spec: WorkerSpec, watcher: Watcher) -> None:
        # The initializer travels as our own pickle (a lambda works); initargs go to
        # the Process as they are, so locks and events can be shared by inheritance.
        # (The spec is not kept: the initargs are let go of at close().)
        ctx = spec.ctx
        init_blob = None
        if spec.initializer is not None:
            init_blob = serialize.dumps(spec.initializer)
        # Workers watch the read end of this pipe; only this process holds the write
        # end, so its death (even by SIGKILL) is an EOF in every worker.
        alive_r, self._alive_w = os.pipe()
        _parent_fds.add(self._alive_w)
        self._alive_r = multiprocessing.connection.Connection(alive_r, writable=False)
        self.config = WorkerConfig(
            init_blob, tuple(spec.initargs), spec.max_tasks, spec.max_memory, self._alive_r,
            spec.init_logger,
        )
        self._ctx = ctx
        self._watcher = watcher
        self.processes = spec.processes
        self._slots: dict[int, Slot] = {}
        self._start_failures = 0
        self._start_kills = 0
        self._last_init_error: str | None = None
        # The first workers are started from the caller's thread, before the scheduler
        # thread exists: a fork taken while another thread holds a lock (an import
        # lock, say) gives a child that deadlocks on it (see serialize.import_lock).
        # Replacements are started by the scheduler thread. Under fork, a fork of this
        # process would copy the locks the other threads hold; they come from a
        # single-threaded copy of it instead, which the first worker forks as it
        # starts (see zygote.py).
        self._zygote: Zygote | None = None
        self._carry: Zygote | None = None
        if _start_method(ctx) == "fork":
            self._carry = Zygote()
        self._later_zygote = self._carry

    # -- reading (any thread reads copies)

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots.values())

    def snapshot(self) -> list[Slot]:
        """The slots now (a copy: safe to read from any thread, and while the table
        changes)."""
        return list(self._slots.values())

    def table_view(self) -> dict[int, Slot]:
        """The table, to look at only (the lending hot path binds it)."""
        return self._slots

    @property
    def zygote(self) -> Zygote | None:
        """The fork zygote (None under spawn and forkserver)."""
        return self._later_zygote

    def missing(self) -> bool:
        return len(self._slots) < self.processes

    def lendable(self) -> Slot | None:
        return next((s for s in self._slots.values() if s.lendable()), None)

    # -- changing (scheduler thread, or under the table lock)

    def start_missing(self) -> list[Slot]:
        """Start workers until there are ``processes``; return the new slots."""
        started = []
        while len(self._slots) < self.processes:
            slot = Slot(self._ctx, self.config, self._zygote, self._carry)
            self._carry = None
            self._slots[slot.pid] = slot
            started.append(slot)
        self._zygote = self._later_zygote  # what comes next comes from the zygote
        return started

    def forget(self, slot: Slot) -> None:
        """A worker is gone (reaped): drop it and close its descriptors."""
        self._watcher.forget(slot)
        self._slots.pop(slot.pid, None)
        slot.close_fds()

    def kill_all(self) -> None:
        """SIGKILL and reap every worker (the scheduler failed)."""
        for slot in list(self._slots.values()):
            slot.signal(signal.SIGKILL)
            slot.reap()
            self.forget(slot)

    def note_ready(self, slot: Slot) -> None:
        slot.ready = True
        self._start_failures = self._start_kills = 0

    def note_start_failure(self, slot: Slot, exitcode: int | None) -> PoolBrokenError | None:
        """Count a worker that died before READY; the error that breaks the pool once
        enough did in a row (None until then).

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
            return None
        why = self._last_init_error or f"the worker exited with code {exitcode} before it was ready"
        return PoolBrokenError(
            f"{self._start_failures} workers in a row failed to start; the pool is broken. "
            f"Last failure:\n{why}"
        )

    def close(self) -> None:
        """No worker starts any more (the scheduler ends): let go of the initializer and
        initargs now (a Queue or a Manager proxy in them), not when a gc finds the
        engine; stop the zygote; close the alive pipe."""
        self.config = dataclasses.replace(self.config, init_blob=None, initargs=())
        if self._later_zygote is not None:
            self._later_zygote.close()
        close_parent_fd(self._alive_w)
        self._alive_r.close()


def _start_method(ctx: Any) -> str | None:
    get = getattr(ctx, "get_start_method", None)
    return get() if get is not None else None
