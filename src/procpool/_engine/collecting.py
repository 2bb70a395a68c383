"""Reading workers' answers and resolving tasks (part of the scheduler).

Runs on the scheduler thread, or on the thread of a caller that borrowed a worker
(Engine.call_direct) under the table lock, as a part of :class:`procpool._engine.Engine`.
A worker answers each call at once, in order, so the oldest unanswered call of a slot
(its head) is the one running; a batch (Task.items) answers item by item.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from procpool._core.errors import UNSENT_RESULT, RemoteError, RemoteTraceback, SerializationError
from procpool._core.task import DISCARD, TID_STEP, Sink, Task
from procpool._engine.faults import FaultHandling
from procpool._engine.slot import Slot
from procpool._worker import serialize, shm
from procpool._worker.wire import CUT, ErrorReport, FrameReader, Kind, Payload

if TYPE_CHECKING:
    import itertools

log = logging.getLogger("procpool")

_RESULT = int(Kind.RESULT)


class Collecting(FaultHandling):
    """What the scheduler does with the frames a worker sends back."""

    if TYPE_CHECKING:  # provided by Engine
        _tids: itertools.count[int]
        _fds: dict[int, Any]

    def _pump(self, slot: Slot, reader: FrameReader | None = None) -> bool | None:
        """Read once from a worker's result pipe (or its direct pipe) and handle the
        frames that came. False at end of file, None when there was nothing to read.
        """
        if reader is None:
            reader = slot.reader
        try:
            more = reader.fill()
        except BlockingIOError:
            return None
        outstanding = slot.outstanding
        now = time.monotonic()  # (every frame of one read arrived at once)
        loads = serialize.loads
        for kind, tid, payload in reader.frames():
            task = outstanding[0] if outstanding else None
            if kind != _RESULT or task is None or task.tid != tid or task.items is not None:
                self._on_frame(slot, kind, tid, payload)
                continue
            # The common case, inline (it runs once per task): the running call's
            # result. The same steps as _take, _finish and _resolve.
            outstanding.popleft()
            service = self._service_time  # as _note_service_time, inline
            seconds = now - slot.head_started
            self._service_time = (
                seconds if service is None else service + 0.2 * (seconds - service)
            )
            slot.head_started = now
            slot.stealing = False
            task.worker = None
            if task.fds:
                task.release()
            if task.abandoned:
                continue
            try:
                value = loads(payload)
            except BaseException as exc:
                self._resolve(task, False, _unpickle_error(exc))
                continue
            sink, task.sink = task.sink, DISCARD  # (as _resolve and _deliver)
            task.payload = b""
            try:
                sink._resolve(task.index, True, value)
            except BaseException:
                log.exception("procpool: resolving a task failed")
        return more

    def _on_item(self, slot: Slot, batch: Task, kind: int, payload: Payload) -> None:
        """The answer for the running item of a batch (see Task)."""
        assert batch.items is not None
        self._next_head(slot)  # time limits and stealing count per item
        offset = batch.answered
        batch.answered = offset + 1
        sink = batch.sink
        if batch.answered == len(batch.items):
            slot.outstanding.popleft()
            slot.stealing = False
            batch.worker = None
            batch.sink = DISCARD
        if kind == Kind.RESULT_OOB:  # (rare) the large buffers come with the task
            item = Task(b"", sink, batch.index + offset, batch.name, (None, 0))
            item.abandoned = batch.abandoned
            self._finish_oob(slot, item, payload)
        elif not batch.abandoned:
            _deliver(sink, batch.index + offset, *_outcome(kind == Kind.RESULT, payload))

    def _on_readable(self, slot: Slot) -> None:
        if self._pump(slot) is False:
            self._unwatch(slot.result_fd)  # EOF; the sentinel reports the death

    def _drain(self, slot: Slot) -> None:
        while slot.result_fd in self._fds:
            try:
                if not self._pump(slot):
                    break
            except OSError:
                break
        while True:  # the answer to a lent call, when its borrower did not read it
            try:
                if not self._pump(slot, slot.direct_reader):
                    break
            except OSError:
                break

    def _on_frame(self, slot: Slot, kind: int, tid: int, payload: Payload) -> None:
        if kind == Kind.RESULT or kind == Kind.ERROR or kind == Kind.RESULT_OOB:
            head = slot.outstanding[0] if slot.outstanding else None
            if head is not None and head.items is not None and 0 <= tid - head.tid < TID_STEP:
                self._on_item(slot, head, kind, payload)
                return
        if kind == Kind.RESULT or kind == Kind.ERROR:
            task = self._take(slot, tid)
            if task is not None:
                self._finish(task, kind == Kind.RESULT, payload)
        elif kind == Kind.RESULT_OOB:
            task = self._take(slot, tid)
            self._finish_oob(slot, task, payload)
        elif kind == Kind.CANCELLED:
            task = self._take(slot, tid)
            if task is not None and not task.abandoned:
                task.attempts -= 1  # stolen before it started: it never ran
                self._pending.appendleft(task)
            if len(slot.outstanding) <= 1:
                slot.stealing = False
        elif kind == Kind.CUT:
            self._on_cut(slot, tid, payload)
        elif kind == Kind.UNPACKED:
            if slot.outstanding and slot.outstanding[0].tid == tid:
                slot.outstanding[0].unpacked = True
        elif kind == Kind.READY:
            slot.ready = True
            self._start_failures = self._start_kills = 0
        elif kind == Kind.RETIRE:
            slot.retiring = True
        elif kind == Kind.INIT_FAILED:
            report: ErrorReport = serialize.loads(payload)
            slot.init_error = report.traceback

    def _on_cut(self, slot: Slot, tid: int, payload: Payload) -> None:
        """A worker stopped a batch early (asked by _steal, or it could not unpickle
        it): the items it did not run go back to the front of the queue."""
        offset, split = CUT.unpack(payload)
        outstanding = slot.outstanding
        if not outstanding or outstanding[0].tid != tid:
            return
        batch = outstanding[0]
        items = batch.items
        if items is None:
            return
        # The batch now ends before ``offset`` (the item running, if any, stays).
        parts: list[Task] = []
        if not batch.abandoned and offset < len(items):
            if split:  # one by one, so that only the item that cannot travel fails
                parts = [self._part(batch, i, i + 1) for i in range(offset, len(items))]
            else:
                parts = [self._part(batch, offset)]
        batch.items = items[:offset]
        if batch.answered >= offset:
            outstanding.popleft()
            batch.worker = None
            batch.sink = DISCARD
            slot.head_started = time.monotonic()
        if len(outstanding) <= 1:
            slot.stealing = False
        for part in reversed(parts):
            self._pending.appendleft(part)

    def _part(self, batch: Task, start: int, stop: int | None = None) -> Task:
        """A new task for some of a batch's items, with a task id of its own."""
        part = batch.part(start, stop)
        part.tid = next(self._tids)
        part.abandoned = batch.abandoned
        return part

    def _take(self, slot: Slot, tid: int) -> Task | None:
        """Remove a task from the slot's outstanding calls, noting who runs next."""
        outstanding = slot.outstanding
        if not outstanding:
            return None
        if outstanding[0].tid == tid:
            task = outstanding.popleft()
            self._next_head(slot)
            slot.stealing = False
        else:
            found = [t for t in outstanding if t.tid == tid]
            if not found:
                return None
            task = found[0]
            outstanding.remove(task)
        task.worker = None
        return task

    def _next_head(self, slot: Slot) -> None:
        """The head call answered: note its service time; the next one starts now."""
        now = time.monotonic()
        self._note_service_time(now - slot.head_started)
        slot.head_started = now

    # -- results

    def _finish(self, task: Task, ok: bool, payload: Payload) -> None:
        if task.abandoned:
            task.release()
            return
        self._resolve(task, *_outcome(ok, payload))

    def _finish_oob(self, slot: Slot, task: Task | None, payload: Payload) -> None:
        count, data = shm.unpack_count(payload)
        try:
            fds = shm.receive(slot.fd_sock, count, block=False)
        except OSError as exc:
            if task is not None and not task.abandoned:
                error = SerializationError("unpickle result", f"shared memory lost: {exc}")
                self._resolve(task, False, error)
            return
        if task is None or task.abandoned:
            shm.close_all(fds)
            return
        try:
            value = shm.loads(data, fds)
        except BaseException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            self._resolve(task, False, SerializationError("unpickle result", detail))
            return
        self._resolve(task, True, value)

    def _resolve(self, task: Task, ok: bool, value: Any) -> None:
        task.release()
        sink, task.sink = task.sink, DISCARD  # break the handle <-> task cycle
        task.payload = b""  # (an apply_async handle is its task: do not keep the call)
        if task.items is None:
            _deliver(sink, task.index, ok, value)
        else:  # a whole batch fails (terminate, a broken pool): every item left
            for offset in range(task.answered, len(task.items)):
                _deliver(sink, task.index + offset, ok, value)


def _deliver(sink: Sink, index: int, ok: bool, value: Any) -> None:
    try:
        sink._resolve(index, ok, value)
    except BaseException:
        log.exception("procpool: resolving a task failed")


def _outcome(ok: bool, payload: Payload) -> tuple[bool, Any]:
    """A RESULT (``ok``) or ERROR payload, decoded: (ok, value or exception)."""
    if not ok:
        return False, _rebuild_error(payload)
    try:
        return True, serialize.loads(payload)
    except BaseException as exc:
        return False, _unpickle_error(exc)


def _unpickle_error(exc: BaseException) -> SerializationError:
    return SerializationError("unpickle result", f"{type(exc).__name__}: {exc}")


def _rebuild_error(payload: Payload) -> BaseException:
    """Turn a worker's ErrorReport back into an exception, with its traceback as cause."""
    report: ErrorReport = serialize.loads(payload)
    exc: BaseException | None = None
    if report.exc is not None:
        try:
            exc = serialize.loads(report.exc)
        except BaseException:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(report.type_name, report.message)
    exc.__cause__ = RemoteTraceback(report.traceback)
    if report.unsent is not None:
        setattr(exc, UNSENT_RESULT, report.unsent)  # (a Pool makes it a MaybeEncodingError)
    return exc
