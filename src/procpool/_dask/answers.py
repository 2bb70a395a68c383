"""Turning a Dask worker's answer into a task's outcome, and settling the task.

An answer is what :func:`procpool._dask.remote.run` returned: ``(ok, blob)``, or a list
of them for a batch (one per item). The decoding is the local engine's: a result
unpickled here, an error rebuilt from its ErrorReport with the worker's traceback as
``__cause__`` (see procpool._engine.outcome, which speaks the same format).
"""

from __future__ import annotations

import logging
from typing import Any

from procpool._core.errors import (
    SerializationError,
    WorkerLostError,
)
from procpool._core.task import DISCARD, Task
from procpool._worker import serialize

log = logging.getLogger("procpool")


class Failed:
    """An answer that never came: fetching it from Dask raised ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def settle(task: Task, answer: Any) -> None:
    """Resolve ``task`` from its answer (each item of a batch at its own index)."""
    if type(answer) is Failed:
        resolve(task, False, answer.error)
    elif task.items is None:
        resolve(task, *decode(answer))
    else:
        sink, task.sink = task.sink, DISCARD
        task.payload = b""
        for offset, item in enumerate(answer):
            _deliver(sink, task.index + offset, *decode(item))


def resolve(task: Task, ok: bool, value: Any) -> None:
    """Settle a task (every item, for a batch); its sink is let go of."""
    sink, task.sink = task.sink, DISCARD  # break the handle <-> task cycle
    task.payload = b""
    task.worker = None
    if task.items is None:
        _deliver(sink, task.index, ok, value)
    else:
        for offset in range(len(task.items)):
            _deliver(sink, task.index + offset, ok, value)


def _deliver(sink: Any, index: int, ok: bool, value: Any) -> None:
    try:
        sink._resolve(index, ok, value)
    except BaseException:
        log.exception("procpool: resolving a task failed")


def decode(answer: tuple[bool, bytes]) -> tuple[bool, Any]:
    """``(ok, value or exception)`` from one ``(ok, blob)`` answer."""
    ok, blob = answer
    if not ok:
        return False, serialize.rebuild_error(blob)
    try:
        return True, serialize.loads(blob)
    except BaseException as exc:
        return False, SerializationError("unpickle result", f"{type(exc).__name__}: {exc}")




def lost(task: Task, killed: BaseException) -> WorkerLostError:
    """The error of a call Dask gave up on: every worker that ran it died."""
    error = WorkerLostError(None, None, task.name)
    error.args = (f"the Dask workers running {task.name} died ({killed}); "
                  f"Dask gave up on it",)  # fmt: skip
    error.__cause__ = killed
    return error
