"""A task's outcome: decoding a worker's answer, and resolving the task's sink.

No state: functions that the answers, the faults and a borrowing caller share.
"""

from __future__ import annotations

import logging
from typing import Any

from procpool._core.errors import SerializationError
from procpool._core.task import DISCARD, Sink, Task
from procpool._worker import serialize
from procpool._worker.wire import Payload

log = logging.getLogger("procpool")


def resolve(task: Task, ok: bool, value: Any) -> None:
    """Settle a task: its sink gets the outcome (every item left, for a batch)."""
    task.release()
    sink, task.sink = task.sink, DISCARD  # break the handle <-> task cycle
    task.payload = b""  # (an apply_async handle is its task: do not keep the call)
    if task.items is None:
        deliver(sink, task.index, ok, value)
    else:  # a whole batch fails (terminate, a broken pool): every item left
        for offset in range(task.answered, len(task.items)):
            deliver(sink, task.index + offset, ok, value)


def deliver(sink: Sink, index: int, ok: bool, value: Any) -> None:
    try:
        sink._resolve(index, ok, value)
    except BaseException:
        log.exception("procpool: resolving a task failed")


def decode(ok: bool, payload: Payload) -> tuple[bool, Any]:
    """A RESULT (``ok``) or ERROR payload, decoded: (ok, value or exception)."""
    if not ok:
        return False, serialize.rebuild_error(payload)
    try:
        return True, serialize.loads(payload)
    except BaseException as exc:
        return False, unpickle_error(exc)


def unpickle_error(exc: BaseException) -> SerializationError:
    return SerializationError("unpickle result", f"{type(exc).__name__}: {exc}")


