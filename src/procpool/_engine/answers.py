"""Reading workers' answers and resolving their tasks.

Owner: :class:`Answers` owns no table of its own; it owns the reading of each
worker's result pipe (the slot's FrameReader) and what a frame does: a result or an
error resolves the task at the head of the slot's calls and moves the head on; a
cancelled call or a cut batch goes back to the dispatcher's queue; READY and a start
failure go to the worker table. Each answered call's service time goes to the Pace.

Runs on the scheduler thread, or on the thread of a caller that borrowed a worker
(see lending) under the table lock. A worker answers each call at once, in order, so
the oldest unanswered call of a slot (its *head*) is the one running; a batch
(``Task.items``) answers item by item, as ``tid + offset``.
"""

from __future__ import annotations

import logging
import time

from procpool._core.errors import SerializationError
from procpool._core.task import DISCARD, TID_STEP, Task
from procpool._engine.dispatch import Dispatcher, Pace
from procpool._engine.outcome import decode, deliver, resolve, unpickle_error
from procpool._engine.slot import Slot
from procpool._engine.watcher import Watcher
from procpool._engine.workers import WorkerTable
from procpool._worker import serialize, shm
from procpool._worker.wire import CUT, ErrorReport, FrameReader, Kind, Payload

log = logging.getLogger("procpool")

_RESULT = int(Kind.RESULT)


class Answers:
    """What the scheduler does with the frames a worker sends back."""

    def __init__(
        self, workers: WorkerTable, dispatcher: Dispatcher, watcher: Watcher, pace: Pace
    ) -> None:
        self._workers = workers
        self._dispatcher = dispatcher
        self._watcher = watcher
        self._pace = pace

    def pump(self, slot: Slot, reader: FrameReader | None = None) -> bool | None:
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
        note_service_time = self._pace.note
        for kind, tid, payload in reader.frames():
            task = outstanding[0] if outstanding else None
            if kind != _RESULT or task is None or task.tid != tid or task.items is not None:
                self._on_frame(slot, kind, tid, payload)
                continue
            # The common case, inline (it runs once per task): the running call's
            # result. The same steps as _take, _finish and outcome.resolve.
            outstanding.popleft()
            note_service_time(now - slot.head_started)
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
                resolve(task, False, unpickle_error(exc))
                continue
            sink, task.sink = task.sink, DISCARD  # (as resolve and deliver)
            task.payload = b""
            try:
                sink._resolve(task.index, True, value)
            except BaseException:
                log.exception("procpool: resolving a task failed")
        return more

    def on_readable(self, slot: Slot) -> None:
        """The watcher's handler for a worker's result pipe."""
        if self.pump(slot) is False:
            self._watcher.unwatch(slot.result_fd)  # EOF; the sentinel reports the death

    def drain(self, slot: Slot) -> None:
        """Handle everything a dead worker sent before it died."""
        while self._watcher.watching(slot.result_fd):
            try:
                if not self.pump(slot):
                    break
            except OSError:
                break
        while True:  # the answer to a lent call, when its borrower did not read it
            try:
                if not self.pump(slot, slot.direct_reader):
                    break
            except OSError:
                break

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
            deliver(sink, batch.index + offset, *decode(kind == Kind.RESULT, payload))

    def _on_frame(self, slot: Slot, kind: int, tid: int, payload: Payload) -> None:
        if kind == Kind.RESULT or kind == Kind.ERROR or kind == Kind.RESULT_OOB:
            head = slot.outstanding[0] if slot.outstanding else None
            if head is not None and head.items is not None and 0 <= tid - head.tid < TID_STEP:
                self._on_item(slot, head, kind, payload)
                return
        if kind == Kind.RESULT or kind == Kind.ERROR:
            task = self._take(slot, tid)
            if task is not None:
                if task.abandoned:
                    task.release()
                else:
                    resolve(task, *decode(kind == Kind.RESULT, payload))
        elif kind == Kind.RESULT_OOB:
            self._finish_oob(slot, self._take(slot, tid), payload)
        elif kind == Kind.CANCELLED:
            task = self._take(slot, tid)
            if task is not None and not task.abandoned:
                self._dispatcher.requeue([task])  # stolen before it started: it never ran
            if len(slot.outstanding) <= 1:
                slot.stealing = False
        elif kind == Kind.PARTIAL:
            self._on_partial(slot, tid, payload)
        elif kind == Kind.CUT:
            self._on_cut(slot, tid, payload)
        elif kind == Kind.UNPACKED:
            if slot.outstanding and slot.outstanding[0].tid == tid:
                slot.outstanding[0].unpacked = True
        elif kind == Kind.READY:
            self._workers.note_ready(slot)
        elif kind == Kind.RETIRE:
            slot.retiring = True
        elif kind == Kind.INIT_FAILED:
            report: ErrorReport = serialize.loads(payload)
            slot.init_error = report.traceback

    def _on_partial(self, slot: Slot, tid: int, payload: Payload) -> None:
        """A value a streaming call yielded: to its sink now (the call runs on)."""
        head = slot.outstanding[0] if slot.outstanding else None
        if head is None or head.tid != tid or head.abandoned:
            return
        partial = getattr(head.sink, "_partial", None)
        if partial is None:
            return
        try:
            ok, value = True, serialize.loads(payload)
        except BaseException as exc:
            ok, value = False, unpickle_error(exc)
        try:
            partial(head.index, ok, value)
        except BaseException:
            log.exception("procpool: delivering a streamed value failed")

    def _on_cut(self, slot: Slot, tid: int, payload: Payload) -> None:
        """A worker stopped a batch early (asked by a steal, or it could not unpickle
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
        part = self._dispatcher.part
        if not batch.abandoned and offset < len(items):
            if split:  # one by one, so that only the item that cannot travel fails
                parts = [part(batch, i, i + 1) for i in range(offset, len(items))]
            else:
                parts = [part(batch, offset)]
        batch.items = items[:offset]
        if batch.answered >= offset:
            outstanding.popleft()
            batch.worker = None
            batch.sink = DISCARD
            slot.head_started = time.monotonic()
        if len(outstanding) <= 1:
            slot.stealing = False
        for each in reversed(parts):
            self._dispatcher.push_front(each)

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
        self._pace.note(now - slot.head_started)
        slot.head_started = now

    def _finish_oob(self, slot: Slot, task: Task | None, payload: Payload) -> None:
        count, data = shm.unpack_count(payload)
        try:
            fds = shm.receive(slot.fd_sock, count, block=False)
        except OSError as exc:
            if task is not None and not task.abandoned:
                error = SerializationError("unpickle result", f"shared memory lost: {exc}")
                resolve(task, False, error)
            return
        if task is None or task.abandoned:
            shm.close_all(fds)
            return
        try:
            value = shm.loads(data, fds)
        except BaseException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            resolve(task, False, SerializationError("unpickle result", detail))
            return
        resolve(task, True, value)
