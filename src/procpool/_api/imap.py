"""IMapIterator: the lazy results of ``imap``/``imap_unordered``.

Input is read in the consumer's thread, a bounded window ahead of what was yielded;
one-item chunks of short calls travel in batches (see Task.items).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from procpool._core.errors import CancelledError, GetTimeoutError, for_pool
from procpool._core.state import State
from procpool._core.task import Task
from procpool._worker import serialize
from procpool._worker.main import MAP

if TYPE_CHECKING:
    from procpool._core.backend import Backend

T = TypeVar("T")

_MAX_ADAPTIVE_CHUNK = 4096
_MAX_BATCH = 64
_BATCH_WORK = 0.001  # seconds of work per batch of one-item chunks


class _Failure:
    """An error in an imap's stream of results, raised when its position is reached."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class IMapIterator(Generic[T]):
    """Lazy results of ``imap``/``imap_unordered``.

    Input is read in the consumer's thread, a bounded window of chunks ahead of what
    has been yielded, so an endless generator works and memory stays flat.
    """

    def __init__(
        self,
        engine: Backend,
        make_task: Callable[[list[Any], int, int, IMapIterator[T]], Task],
        source: Iterator[Any],
        chunksize: int | None,
        ordered: bool,
        window: int,
        workers: int,
        make_batch: Callable[[list[Any], int, IMapIterator[T]], Task | None] | None = None,
    ) -> None:
        self._engine = engine
        self._make_task = make_task
        # One-item chunks of short calls go several to a frame (Task.items): ~1 ms of
        # work per batch, from the rate measured so far.
        self._make_batch = make_batch if chunksize == 1 else None
        self._source = source
        self._fixed = chunksize
        self._workers = workers
        self._read = 0
        self._started = time.perf_counter()
        self._yielded = 0
        self._ordered = ordered
        self._window = window
        self._cond = threading.Condition(threading.Lock())
        self._done: dict[int, tuple[bool, Any]] = {}
        self._arrived: deque[int] = deque()
        self._inflight: dict[int, Task] = {}
        self._buffer: deque[Any] = deque()
        self._submitted = 0
        self._taken = 0
        self._exhausted = False
        self._feeding = False
        self._feed_lock = threading.Lock()
        self._cancelled = False
        self._cut_short = False  # cancelled with input unread or chunks in flight
        self._input_error: BaseException | None = None
        # The Pool (set by it), held until the results end: as the stdlib's
        # IMapIterator._pool, so ``list(Pool(2).imap(f, xs))`` works.
        self._pool: object = None
        self._top_up()

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        """The next result; GetTimeoutError if none arrives within ``timeout``."""
        while not self._buffer:
            self._top_up()
            if self._feeding and self._taken == self._submitted:
                self._wait_for_feeder()
            if self._taken == self._submitted:
                self._pool = None
                if self._input_error is not None:
                    error, self._input_error = self._input_error, None
                    raise error
                if self._cut_short:
                    raise CancelledError("the imap was cancelled")
                raise StopIteration
            for ok, value in self._wait_chunks(timeout):
                if ok:
                    self._buffer.extend(value)
                else:
                    self._buffer.append(_Failure(value))
        item = self._buffer.popleft()
        if type(item) is _Failure:
            raise item.error
        self._yielded += 1
        result: T = item
        return result

    __next__ = next

    def cancel(self) -> None:
        """Cancel every chunk still in flight and stop reading input.

        Once the results already received have been yielded, iterating raises
        CancelledError (not StopIteration) if anything was left undone.
        """
        with self._cond:
            self._cut_short = self._cut_short or not self._exhausted or bool(self._inflight)
            self._exhausted = True
            self._cancelled = True
            tasks = list({id(t): t for t in self._inflight.values()}.values())  # batches once
            self._inflight.clear()
            self._cond.notify_all()
        self._pool = None  # (outside the lock: the pool's finalizer may run)
        for task in tasks:
            self._engine.cancel(task)

    def _wait_chunks(self, timeout: float | None) -> list[tuple[bool, Any]]:
        """Wait for the next chunk; take it and every other one ready to go after it."""
        try:
            with self._cond:
                if not self._cond.wait_for(self._has_next, timeout):
                    raise GetTimeoutError(f"no result within {timeout}s")
                if self._cancelled:
                    raise CancelledError("the imap was cancelled")
                done = self._done
                chunks = []
                if self._ordered:
                    while self._taken in done:
                        chunks.append(done.pop(self._taken))
                        self._taken += 1
                else:
                    arrived = self._arrived
                    while arrived:
                        chunks.append(done.pop(arrived.popleft()))
                    self._taken += len(chunks)
                return chunks
        except KeyboardInterrupt:
            self.cancel()
            raise

    def _has_next(self) -> bool:
        if self._cancelled:
            return True
        if self._ordered:
            return self._taken in self._done
        return bool(self._arrived)

    def _top_up(self) -> None:
        """Submit chunks until ``window`` of them are in flight or the input ends."""
        if self._exhausted or self._feeding:
            return
        if self._engine.state in (State.TERMINATING, State.BROKEN):
            # Terminated (or broken): what is in flight fails as such; read no more.
            self._exhausted = True
            return
        # Top up in batches, once half the window has drained: one submit (and one
        # wake-up of the scheduler) per batch rather than per result.
        window = self._window
        if self._fixed is None and self._next_size() > 4:
            window = 4 * self._workers + 4  # chunks of ~5 ms: a shorter window will do
        if self._submitted - self._taken > window // 2:
            return
        with self._feed_lock:
            if not self._feeding:
                self._submit_chunks(window - (self._submitted - self._taken), feeder=False)

    def _submit_chunks(self, count: int, feeder: bool) -> None:
        batch = self._batch_size()
        if batch > 1:
            self._submit_batches(count, batch, feeder)
            return
        tasks: list[Task] = []
        failed: list[tuple[int, BaseException]] = []
        taken = 0
        while taken < count:
            chunk = self._read_chunk()
            if not chunk:
                break
            self._make_one(chunk, self._submitted + taken, self._read - len(chunk), tasks, failed)
            taken += 1
        self._submit(tasks, failed, taken, feeder)

    def _make_one(
        self, chunk: list[Any], index: int, start: int, tasks: list[Task],
        failed: list[tuple[int, BaseException]],
    ) -> None:
        """A task for ``chunk``, or its error in its place (an argument that cannot be
        pickled fails its own chunk, as in the stdlib, and the map goes on)."""
        try:
            tasks.append(self._make_task(chunk, index, start, self))
        except Exception as exc:
            failed.append((index, exc))

    def _submit(
        self, tasks: list[Task], failed: list[tuple[int, BaseException]], taken: int,
        feeder: bool,
    ) -> None:
        """Hand over the tasks of ``taken`` chunks (``failed`` ones resolved here)."""
        if not taken:
            return
        with self._cond:
            for task in tasks:
                if task.items is None:
                    self._inflight[task.index] = task
                else:
                    for offset in range(len(task.items)):
                        self._inflight[task.index + offset] = task
            for index, exc in failed:
                self._done[index] = (False, exc)
                if not self._ordered:
                    self._arrived.append(index)
            if failed:
                self._cond.notify()
        if tasks:
            self._engine.submit(tasks, feeder=feeder)
        self._submitted += taken

    def _batch_size(self) -> int:
        if self._make_batch is None or not self._yielded:
            return 1
        per_item = (time.perf_counter() - self._started) * self._workers / self._yielded
        return max(1, min(_MAX_BATCH, int(_BATCH_WORK / max(per_item, 1e-7))))

    def _submit_batches(self, count: int, size: int, feeder: bool) -> None:
        """Submit ``count`` one-item chunks, ``size`` to a task."""
        assert self._make_batch is not None
        tasks: list[Task] = []
        failed: list[tuple[int, BaseException]] = []
        taken = 0
        while taken < count and not self._exhausted:
            items: list[Any] = []
            for _ in range(min(size, count - taken)):
                chunk = self._read_chunk()
                if not chunk:
                    break
                items.append(chunk[0])
            if not items:
                break
            index = self._submitted + taken
            try:
                task = self._make_batch(items, index, self) if len(items) > 1 else None
            except Exception:
                task = None  # one of them cannot be pickled: find which, one by one
            if task is not None:
                tasks.append(task)
            else:
                start = self._read - len(items)
                for i, item in enumerate(items):
                    self._make_one([item], index + i, start + i, tasks, failed)
            taken += len(items)
        self._submit(tasks, failed, taken, feeder)

    def feed_rest(self) -> None:
        """The pool was closed: read the rest of the input in a thread, as the stdlib's
        task thread does, so the results can still be consumed after ``close()``."""
        with self._feed_lock:
            if self._exhausted or self._feeding:
                return
            self._feeding = True
        self._engine.start_feeder(self._feed_loop)

    def _feed_loop(self) -> None:
        while not self._exhausted:
            with self._feed_lock:
                try:
                    self._submit_chunks(self._window, feeder=True)
                except BaseException as exc:  # terminated meanwhile: stop reading
                    self._exhausted = True
                    self._input_error = exc
            with self._cond:
                self._cond.notify_all()  # the consumer may wait for more input

    def _wait_for_feeder(self) -> None:
        """After close(), the feeder thread reads the input: wait until it has
        submitted more than was taken, or reached the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._submitted > self._taken or self._exhausted)

    def _read_chunk(self) -> list[Any]:
        chunk = []
        try:
            for _ in range(self._next_size()):
                chunk.append(next(self._source))
                self._read += 1
        except StopIteration:
            self._exhausted = True
        except Exception as exc:
            self._exhausted = True
            self._input_error = exc
            if self._fixed is not None:
                # As the stdlib: a fixed-size chunk the input failed to fill is never
                # sent, so the error surfaces at that chunk's first position.
                return []
        return chunk

    def _next_size(self) -> int:
        """Fixed, or sized from the rate so far: about 5 ms of work per chunk."""
        if self._fixed is not None:
            return self._fixed
        elapsed = time.perf_counter() - self._started
        if not self._yielded or elapsed <= 0:
            return 1
        per_item = elapsed * self._workers / self._yielded
        return max(1, min(_MAX_ADAPTIVE_CHUNK, int(0.005 / per_item)))

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        if not ok:
            value = for_pool(value)
        with self._cond:
            if self._inflight.pop(index, None) is None:
                return  # cancelled
            self._done[index] = (ok, value)
            if not self._ordered:
                self._arrived.append(index)
            self._cond.notify()

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        """``async for`` over the results; each wait runs in the loop's default executor."""
        import asyncio

        loop = asyncio.get_running_loop()
        sentinel = object()

        def step() -> Any:
            try:
                return self.next()
            except StopIteration:
                return sentinel

        try:
            value = await loop.run_in_executor(None, step)
        except asyncio.CancelledError:
            self.cancel()
            raise
        if value is sentinel:
            raise StopAsyncIteration
        item: T = value
        return item


TaskMaker = Callable[[list[Any], int, int, IMapIterator[Any]], Task]
BatchMaker = Callable[[list[Any], int, IMapIterator[Any]], Task | None]


def task_makers(func: Callable[[Any], Any], options: tuple[float | None, int]) -> tuple[
    TaskMaker, BatchMaker
]:
    """How an imap of ``func`` makes the task of a chunk, and the batch of several
    one-item chunks (None when they carry large buffers: those go one call each)."""
    fn_blob, name = serialize.function_info(func)

    def make_task(chunk: list[Any], index: int, start: int, sink: IMapIterator[Any]) -> Task:
        label = f"{name} on items {start}..{start + len(chunk) - 1}"
        return Task(serialize.call_payload(fn_blob, MAP, chunk, {}), sink, index, label, options)

    def remake(items: list[Any]) -> bytes:
        return serialize.call_payload(fn_blob, MAP, items, {})

    def make_batch(items: list[Any], index: int, sink: IMapIterator[Any]) -> Task | None:
        payload = remake(items)
        if getattr(payload, "fds", None):
            return None
        task = Task(payload, sink, index, name, options)
        task.items, task.remake = items, remake
        return task

    return make_task, make_batch
