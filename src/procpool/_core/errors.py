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
    │   ├── SerializationError     (also BrokenProcessPool,   a call or result that could
    │   │                           pickle.UnpicklingError)   not be rebuilt on the far side
    │   ├── RemoteError                                       an exception that could not cross
    │   └── CancelledError         (also concurrent.futures.CancelledError)
    └── RemoteTraceback        the worker's traceback text, set as ``__cause__``: a
                                Pool sets multiprocessing.pool.RemoteTraceback, an
                                Executor concurrent.futures.process._RemoteTraceback,
                                and isinstance(cause, RemoteTraceback) holds for both

What procpool does not wrap, as the stdlib does not: a call whose arguments cannot be
pickled fails with the pickler's own exception (``TypeError: cannot pickle ...``, or
whatever a ``__reduce__`` raised), from ``get()``/``result()``, with a note naming the
argument; a result that cannot be pickled in the worker fails the same way on an
``Executor`` and as ``multiprocessing.pool.MaybeEncodingError`` on a ``Pool``
(see :func:`for_pool`).

``CancelledError`` derives from ``concurrent.futures.CancelledError``, which since
Python 3.8 is a ``BaseException``-free ``Exception`` subclass.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import pickle
import signal
from concurrent.futures import CancelledError as _FuturesCancelled
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]
from typing import Any


class ProcpoolError(Exception):
    """Base class of every error procpool raises itself."""

    #: The attributes a subclass's __init__ takes, in order: what pickling rebuilds
    #: it from (an error crosses from a worker, and from the parent to callbacks).
    _init_fields: tuple[str, ...] = ()

    def __reduce__(self) -> str | tuple[Any, ...]:
        if not self._init_fields:
            return super().__reduce__()
        return (type(self), tuple(getattr(self, name) for name in self._init_fields))


class _AnyRemoteTraceback(type):
    """``isinstance(x, RemoteTraceback)`` is also true of the stdlib's two classes,
    which the facades attach (see :func:`for_pool` and :func:`for_executor`)."""

    def __instancecheck__(cls, instance: object) -> bool:
        return type.__instancecheck__(cls, instance) or isinstance(instance, _STDLIB_REMOTE)


class RemoteTraceback(Exception, metaclass=_AnyRemoteTraceback):
    """The formatted traceback of an exception raised in a worker (``tb``, a str).

    Attached as ``__cause__`` of the re-raised exception so the default traceback
    printout shows where in the worker it happened. A ``Pool`` attaches it as the
    stdlib's own ``multiprocessing.pool.RemoteTraceback`` and an ``Executor`` as
    ``concurrent.futures.process._RemoteTraceback`` (exactly those types, which tools
    that format causes look for); ``isinstance(cause, procpool.RemoteTraceback)`` is
    true of all three.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# (typeshed knows neither stdlib class: both are Exceptions holding ``tb``, a str.)
_STDLIB_REMOTE: tuple[type[BaseException], ...] = (
    multiprocessing.pool.RemoteTraceback,  # type: ignore[attr-defined]
    _RemoteTraceback,
)


def _recast_cause(exc: BaseException, kind: type[BaseException]) -> None:
    """Make ``exc``'s worker traceback (a RemoteTraceback cause) exactly ``kind``."""
    cause = exc.__cause__
    if cause is not None and type(cause) is not kind and isinstance(cause, RemoteTraceback):
        exc.__cause__ = kind(cause.tb)


def for_executor(exc: BaseException) -> BaseException:
    """The error an ``Executor`` future holds for ``exc``: its worker traceback is a
    ``concurrent.futures.process._RemoteTraceback``, as the stdlib's is."""
    _recast_cause(exc, _RemoteTraceback)
    return exc


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

    _init_fields = ('pid', 'exitcode', 'task')

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


class PoolBrokenError(ProcpoolError, BrokenProcessPool):
    """The pool cannot run tasks any more (for example, every worker fails to start)."""


def fresh_copy(error: BaseException) -> BaseException:
    """A new instance of ``error`` (same type, args and cause) to raise in one more
    place: one instance raised from many would gather every raiser's traceback, and
    hold their frames in cycles through it."""
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    return copy


class TaskTimeoutError(ProcpoolError, multiprocessing.TimeoutError, TimeoutError):
    """The task ran longer than its ``task_timeout``; its worker was stopped."""

    _init_fields = ('timeout', 'pid', 'task')

    def __init__(self, timeout: float, pid: int | None = None, task: str = "") -> None:
        self.timeout = timeout
        self.pid = pid
        self.task = task
        super().__init__(
            f"{task or 'task'} exceeded its time limit of {timeout:g}s; "
            f"worker {pid} was stopped and replaced"
        )


class GetTimeoutError(ProcpoolError, multiprocessing.TimeoutError, TimeoutError):
    """``get(timeout)`` or ``wait`` ran out of time; the task itself goes on."""


class SerializationError(ProcpoolError, BrokenProcessPool, pickle.UnpicklingError):
    """A call or a result that could not be rebuilt on the other side of the pipe.

    ``stage`` says where: ``"unpickle task"`` (in the worker: an argument's
    ``__setstate__`` raised, say) or ``"unpickle result"`` (in the parent). The stdlib
    calls both a ``BrokenProcessPool`` (and breaks the whole executor); procpool fails
    only that task, with an error that is one too, so ``except BrokenProcessPool``
    still catches it.
    """

    _init_fields = ('stage', 'detail')

    def __init__(self, stage: str, detail: str) -> None:
        self.stage = stage
        self.detail = detail
        super().__init__(f"could not {stage}: {detail}")


#: Set on an exception that stopped a result from being pickled in a worker: the
#: result's repr, which a Pool reports in ``MaybeEncodingError`` (see for_pool).
UNSENT_RESULT = "_procpool_unsent_result"


def for_pool(exc: BaseException) -> BaseException:
    """The error a ``Pool`` result raises for ``exc``: as ``multiprocessing.Pool`` does,
    a result that could not be pickled is a ``MaybeEncodingError`` (``exc`` and
    ``value`` as reprs), with the pickling error as its ``__cause__``."""
    _recast_cause(exc, multiprocessing.pool.RemoteTraceback)  # type: ignore[attr-defined]
    unsent = getattr(exc, UNSENT_RESULT, None)
    if unsent is None:
        return exc
    wrapped: BaseException = MaybeEncodingError(exc, "")
    wrapped.value = unsent  # type: ignore[attr-defined]  # (a repr, as the stdlib's is)
    wrapped.args = (repr(exc), unsent)
    wrapped.__cause__ = exc
    return wrapped


class RemoteError(ProcpoolError):
    """A worker's exception whose own type could not be sent back.

    ``type_name`` is the qualified name of the original type and ``message`` its text.
    """

    _init_fields = ('type_name', 'message')

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")


class CancelledError(ProcpoolError, _FuturesCancelled):
    """The task was cancelled (by ``cancel()``, ``terminate()`` or Ctrl-C) before it finished."""
