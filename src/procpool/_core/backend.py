"""The interface between the facades and a backend.

Pool, Executor, their results, imap iterators and futures use a backend through this
interface only; :class:`procpool._engine.engine.Engine` (worker processes on this
machine) implements it, and so will the Dask backend. A facade makes each call a
:class:`~procpool._core.task.Task` whose sink is the facade's own handle; the backend
resolves the sink exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from procpool._core.callbacks import CallbackRunner
from procpool._core.state import State
from procpool._core.task import Task


class Backend(Protocol):
    """What a facade may ask of the machinery that runs its calls."""

    # -- calls
    def submit(self, tasks: list[Task], *, feeder: bool = False) -> None:
        """Queue tasks (any thread). Raises the not-running error once closed."""

    def submit_one(self, task: Task) -> None:
        """submit() for one task: the hot path of apply_async."""

    def start_feeder(self, feed: Callable[[], None]) -> None:
        """Run ``feed`` in a thread of the backend's; it may submit (``feeder=True``)
        after close(), and the backend winds down once it has returned."""

    def call_direct(self, task: Task, queued: bool = False) -> bool:
        """Borrow a worker: run one call from the calling thread, blocking. False when
        none can be lent (the caller then submits it)."""

    def cancel(self, task: Task) -> None:
        """Stop a task whose sink already says cancelled (kill it if it runs)."""

    # -- life cycle
    @property
    def state(self) -> State: ...

    @property
    def broken_error(self) -> BaseException | None: ...

    def not_running_error(self) -> BaseException:
        """The error a submit raises now that the backend no longer takes work."""

    def close(self) -> None: ...

    def terminate(self) -> None: ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the backend has stopped; False on timeout."""

    # -- workers
    @property
    def processes(self) -> int: ...

    def grow(self, processes: int) -> None:
        """Have at least ``processes`` workers, started now."""

    def worker_pids(self) -> list[int]: ...

    def worker_processes(self) -> list[Any]: ...

    def signal_workers(self, signum: int) -> None: ...

    # -- the parent's side
    callbacks: CallbackRunner
    owner_pid: int
    recycles: bool  # workers are replaced after N tasks or at a memory mark

    def owns_current_thread(self) -> bool:
        """True on a thread of the backend's own (it must not join itself)."""
