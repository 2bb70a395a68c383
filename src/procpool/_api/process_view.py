"""Read-only views of worker processes: ``Pool._pool`` and ``Executor._processes``.

The stdlib exposes its workers as ``multiprocessing.Process`` objects, and CPython's
tests (and some user code) read their ``pid``, ``name``, ``is_alive()`` and
``exitcode``, or ``terminate()`` and ``join()`` them. Only procpool's scheduler reaps
a worker, so a view looks at the process without reaping it: a pidfd tells whether it
has exited, ``waitid(WNOWAIT)`` reads the exit code of our own child, and the code the
scheduler reaped is kept by the worker's Popen.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

from procpool._core.backend import Backend

# How long ``exitcode`` waits for the code of a worker that has exited to be stored.
_REAPED_WAIT = 1.0


class WorkerProcess:
    """One worker, as a ``multiprocessing.Process`` shows it (read-only)."""

    __slots__ = ("_popen", "name", "pid")

    def __init__(self, process: Any) -> None:
        # The Popen, not the Process: it keeps the exit code the scheduler reaped
        # after the Process is closed.
        self._popen = process._popen
        self.pid: int = process.pid
        self.name: str = process.name

    def __repr__(self) -> str:
        return f"<procpool worker pid={self.pid} exitcode={self.exitcode}>"

    @property
    def exitcode(self) -> int | None:
        """None while the worker runs; its exit code (-signal if killed) after.

        (A forkserver worker is the server's child, not ours: its code is known once
        the scheduler has been told it, an instant after it exits.)
        """
        code = self._popen.returncode
        if code is not None:  # reaped by the scheduler
            return int(code)
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped this instant, or not our child
            return self._reaped_code()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _reaped_code(self) -> int | None:
        """The code the scheduler reaps or is told: None while the worker runs. Once it
        has exited, the code is stored an instant after (the scheduler's ``waitpid``
        has returned but not yet stored it, or the forkserver has yet to report)."""
        if self.is_alive():
            return None
        deadline = time.monotonic() + _REAPED_WAIT
        while (code := self._popen.returncode) is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return None if code is None else int(code)

    def _exited(self, timeout: float | None) -> bool:
        """Whether the worker has exited, waiting at most ``timeout`` seconds."""
        if self._popen.returncode is not None:  # reaped by the scheduler
            return True
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        try:
            # Checked again after opening: the fd is our worker's, not a reused pid's.
            if self._popen.returncode is not None:
                return True
            return bool(select.select([fd], [], [], timeout)[0])  # readable once exited
        finally:
            os.close(fd)

    def is_alive(self) -> bool:
        return not self._exited(0)

    def terminate(self) -> None:
        """SIGTERM the worker, unless it has already exited (no stray signal). The pool
        fails the task it was running and starts another worker."""
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker has exited (at most ``timeout`` seconds)."""
        self._exited(timeout)


class ProcessTable(Mapping[int, WorkerProcess]):
    """``Executor._processes``: a read-only, live ``{pid: WorkerProcess}``."""

    def __init__(self, engine: Backend) -> None:
        self._engine = engine

    def _table(self) -> dict[int, WorkerProcess]:
        return {process.pid: WorkerProcess(process) for process in self._engine.worker_processes()}

    def __getitem__(self, pid: int) -> WorkerProcess:
        return self._table()[pid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())
