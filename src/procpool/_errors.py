"""Errors raised by procpool.

Every error subclasses :class:`ProcpoolError` *and* the standard-library error it
replaces, so code written for ``multiprocessing`` or ``concurrent.futures`` keeps
catching it::

    Exception
    ├── ProcpoolError
    │   ├── WorkerLostError        (also BrokenProcessPool)   a worker died holding the task
    │   ├── PoolBrokenError        (also BrokenProcessPool)   the pool cannot start workers
    │   ├── TaskTimeoutError       (also multiprocessing.TimeoutError, TimeoutError)
    │   ├── GetTimeoutError        (also multiprocessing.TimeoutError, TimeoutError)
    │   ├── SerializationError     (also pickle.PicklingError, TypeError)
    │   ├── RemoteError                                       an exception that could not cross
    │   └── CancelledError         (also concurrent.futures.CancelledError)
    └── RemoteTraceback                                       the worker's traceback text,
                                                              set as ``__cause__``

``CancelledError`` derives from ``concurrent.futures.CancelledError``, which since
Python 3.8 is a ``BaseException``-free ``Exception`` subclass.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from concurrent.futures import CancelledError as _FuturesCancelled
from concurrent.futures.process import BrokenProcessPool

__all__ = [
    "CancelledError",
    "GetTimeoutError",
    "PoolBrokenError",
    "ProcpoolError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "TaskTimeoutError",
    "WorkerLostError",
]


class ProcpoolError(Exception):
    """Base class of every error procpool raises itself."""


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker.

    Attached as ``__cause__`` of the re-raised exception so the default traceback
    printout shows where in the worker it happened.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb.rstrip("\n") + "\n(the traceback above is from the worker)"


def signal_name(exitcode: int | None) -> str | None:
    """Name of the signal that ended a process (``-9`` -> ``"SIGKILL"``), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class WorkerLostError(ProcpoolError, BrokenProcessPool):
    """The worker running this task died before returning its result.

    Only the task the worker held fails; the pool replaces the worker and goes on.
    Attributes: ``pid``, ``exitcode`` (negative for a signal), ``signal`` (its name, or
    None) and ``task`` (a short description of the call).
    """

    def __init__(self, pid: int | None, exitcode: int | None, task: str = "") -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_name(exitcode)
        self.task = task
        how = f"killed by {self.signal}" if self.signal else f"exited with code {exitcode}"
        hint = ""
        if self.signal == "SIGKILL":
            hint = " (the OOM killer or someone's kill -9?)"
        elif self.signal == "SIGSEGV":
            hint = " (a crash in native code?)"
        msg = f"worker {pid} {how}{hint} while running {task or 'this task'}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.pid, self.exitcode, self.task))


class PoolBrokenError(ProcpoolError, BrokenProcessPool):
    """The pool cannot run tasks any more (for example, every worker fails to start)."""


class TaskTimeoutError(ProcpoolError, multiprocessing.TimeoutError, TimeoutError):
    """The task ran longer than its ``task_timeout``; its worker was stopped."""

    def __init__(self, timeout: float, pid: int | None = None, task: str = "") -> None:
        self.timeout = timeout
        self.pid = pid
        self.task = task
        super().__init__(
            f"{task or 'task'} exceeded its time limit of {timeout:g}s; "
            f"worker {pid} was stopped and replaced"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.timeout, self.pid, self.task))


class GetTimeoutError(ProcpoolError, multiprocessing.TimeoutError, TimeoutError):
    """``get(timeout)`` or ``wait`` ran out of time; the task itself goes on."""


class SerializationError(ProcpoolError, pickle.PicklingError, TypeError):
    """A call, result or exception could not be pickled or unpickled.

    Also a TypeError, because that is what the stdlib raises for an argument that
    cannot be pickled (``cannot pickle '_thread.lock' object``).

    ``stage`` says where: ``"pickle task"``, ``"unpickle task"``, ``"pickle result"``,
    ``"unpickle result"`` or ``"unpickle error"``.
    """

    def __init__(self, stage: str, detail: str) -> None:
        self.stage = stage
        self.detail = detail
        super().__init__(f"could not {stage}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.stage, self.detail))


class RemoteError(ProcpoolError):
    """A worker's exception whose own type could not be sent back.

    ``type_name`` is the qualified name of the original type and ``message`` its text.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.message))


class CancelledError(ProcpoolError, _FuturesCancelled):
    """The task was cancelled (by ``cancel()``, ``terminate()`` or Ctrl-C) before it finished."""
