"""The worker process: read calls, run them in order, send each result back at once.

A worker owns two pipes: ``task_fd`` (calls from the parent) and ``result_fd`` (its
answers). It runs calls strictly in the order they arrive, so the parent knows which
call a worker is running without an acknowledgement: the oldest one it has not
answered yet. Between calls it peeks at the pipe without blocking, so a ``CANCEL``
for a call still queued here is honoured before that call starts.

SIGINT is ignored (the parent decides what Ctrl-C means). A watchdog thread kills the
worker when its parent dies, so a killed parent never leaves a worker behind, even
one in the middle of a long call.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from procpool._core.errors import SerializationError
from procpool._worker import serialize, shm
from procpool._worker.wire import CUT, FrameReader, Kind, Payload, frame, write_all


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to know, sent once at start."""

    init_blob: bytes | None
    initargs: tuple[Any, ...]
    max_tasks: int | None
    max_memory: int | None
    alive: Any  # a Connection: the read end of a pipe only the parent writes to
    # Where a failing initializer is logged, at CRITICAL with its traceback, in the
    # worker (an Executor's is "concurrent.futures", as the stdlib's).
    init_logger: str = "procpool"


def _die_with_parent(alive_fd: int) -> None:
    """Exit at once when the parent process dies, even in the middle of a call.

    A thread blocks reading a pipe whose write end only the parent holds: its EOF is
    the parent's death, whatever killed it. (prctl's PDEATHSIG would follow the
    parent *thread* that forked us, which is not the pool's lifetime.)
    """

    def watch() -> None:
        try:
            while os.read(alive_fd, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="procpool-parent-watch", daemon=True).start()


def _resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# How long a worker watches its pipe for the next call after answering a caller that
# is blocked on the answer (see _Worker.linger).
_LINGER = 200e-6


def spin(poller: select.poll, until: float) -> bool:
    """Poll without sleeping until something is ready (True) or ``until`` (False)."""
    clock = time.perf_counter
    while not poller.poll(0):
        if clock() >= until:
            return False
    return True


# How often a worker running a queue of calls looks at its pipe between them.
_PEEK_EVERY = 200e-6


# How a CALL's payload ``(fn_blob, mode, data, kwargs)`` is applied. STREAM: like
# APPLY, but each value the call yields is sent at once (PARTIAL), then the count.
APPLY, MAP, STARMAP, STREAM = 0, 1, 2, 3


def call(fn: Callable[..., Any], mode: int, data: Any, kwargs: dict[str, Any]) -> Any:
    """Run one call: ``fn(*data, **kwargs)``, or ``fn`` over a map chunk."""
    if mode == APPLY:
        return fn(*data, **kwargs)
    if mode == MAP:
        return [fn(item) for item in data]
    return [fn(*item) for item in data]


def _unset(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no function was unpickled yet")


class _Worker:
    def __init__(
        self, task_fd: int, result_fd: int, direct_fd: int, fd_sock: int, config: WorkerConfig
    ) -> None:
        self.task_fd = task_fd
        self.result_fd = result_fd
        self.direct_fd = direct_fd
        self.fd_sock = fd_sock
        self.config = config
        self.reader = FrameReader(task_fd)
        # (task id, pickled call, its memfds, the descriptor its answer goes to, batch?)
        self.queue: deque[tuple[int, Payload, list[int] | None, int, bool]] = deque()
        self.poller = select.poll()
        self.poller.register(task_fd, select.POLLIN)
        self.fn_cache: dict[bytes, Callable[..., Any]] = {}
        # The function part of the last call and its function: a loop of calls to one
        # function then skips the split, the copy and the hash of its pickle.
        self.last_part = b"\xff" * 5  # no payload starts so: a 4 GiB function pickle
        self.last_fn: Callable[..., Any] = _unset
        self.stopping = False
        self.in_call = False
        self.steal_pending = False
        self.absorbing = False
        self.running_batch: int | None = None
        self.batch_next = 0  # the first item of the running batch not started yet
        self.cut = False
        self.done = 0
        # Lingering after answering a caller blocked on the answer (CALL_WAITED).
        self.caller_waiting = False
        self.linger_for = _LINGER
        self.answered_at = 0.0

    def send(self, kind: int, tid: int, payload: bytes = b"", fd: int | None = None) -> None:
        data = frame(kind, tid, payload)
        n = os.write(self.result_fd if fd is None else fd, data)
        if n < len(data):  # a large frame: the rest as the reader makes room
            write_all(self.result_fd if fd is None else fd, memoryview(data)[n:])

    def initialize(self) -> bool:
        if self.config.init_blob is not None:
            try:
                initializer = serialize.loads(self.config.init_blob)
                initializer(*self.config.initargs)
            except BaseException as exc:
                logging.getLogger(self.config.init_logger).critical(
                    "Exception in initializer:", exc_info=True
                )
                self.send(Kind.INIT_FAILED, 0, serialize.error_report(exc))
                return False
        self.send(Kind.READY, 0)
        return True

    def on_steal(self, signum: int, frame: object) -> None:
        """SIGUSR1: the parent wants back calls queued here (see Dispatcher._steal).

        Only acts in the middle of a user call, when the main loop is not itself
        reading the pipe or writing an answer.
        """
        if self.in_call and not self.absorbing:
            self.absorb()
        else:
            self.steal_pending = True  # honoured as the next call starts

    def absorb(self) -> None:
        """Read whatever the parent has sent (CANCELs are answered at once).

        Never re-entered: a second SIGUSR1 that lands while this runs (in a handler,
        or at the start of a call) is left for the next call's start, not handled in
        the middle of our own walk over the queue.
        """
        self.absorbing = True
        try:
            self.steal_pending = False
            while self.poller.poll(0) and self.receive(block=False):
                pass
        finally:
            self.absorbing = False

    def receive(self, block: bool) -> bool:
        """Take in frames from the parent. False when the parent has gone."""
        if not block and not self.poller.poll(0):
            return True
        if not self.reader.fill():
            return False
        for kind, tid, payload in self.reader.frames():
            if kind == Kind.CALL:
                self.queue.append((tid, payload, None, self.result_fd, False))
            elif kind == Kind.CALL_ITEMS:
                self.queue.append((tid, payload, None, self.result_fd, True))
            elif kind == Kind.CALL_WAITED:
                self.queue.append((tid, payload, None, self.direct_fd, False))
                self.on_waited_call()
            elif kind == Kind.CALL_OOB:
                count, rest = shm.unpack_count(payload)
                fds = shm.receive(self.fd_sock, count)
                self.queue.append((tid, bytes(rest), fds, self.result_fd, False))
            elif kind == Kind.CANCEL:
                self.drop(tid)
            elif kind == Kind.STOP:
                self.stopping = True
        return True

    def drop(self, tid: int) -> None:
        if tid == self.running_batch:
            # Give back the items not started yet at once (this may run in the middle
            # of a long item, from the steal signal); stop after the running one.
            if not self.cut:
                self.cut = True
                self.send(Kind.CUT, tid, CUT.pack(self.batch_next, 0))
            return
        for item in self.queue:
            if item[0] == tid:
                self.queue.remove(item)
                shm.close_all(item[2] or ())
                self.send(Kind.CANCELLED, tid)
                return

    def run_one(
        self, tid: int, payload: Payload, fds: list[int] | None, out: int, batch: bool
    ) -> None:
        try:
            fn, (mode, data, kwargs) = self.unpack(payload, fds)
        except BaseException as exc:
            if batch:  # the parent sends the items again one by one: each fails alone
                self.send(Kind.CUT, tid, CUT.pack(0, 1))
                return
            err = SerializationError("unpickle task", f"{type(exc).__name__}: {exc}")
            err.__cause__ = exc
            self.send(Kind.ERROR, tid, serialize.error_report(err), out)
            return
        if batch:
            self.send(Kind.UNPACKED, tid)
            self.run_items(tid, fn, mode, data, kwargs)
        else:
            self.answer(tid, out, fn, mode, data, kwargs)

    def unpack(self, payload: Payload, fds: list[int] | None) -> tuple[Callable[..., Any], Any]:
        """The function of a call and its unpickled ``(mode, data, kwargs)``."""
        part = self.last_part
        if payload.startswith(part):  # (a length prefix, so the same function's pickle)
            return self.last_fn, serialize.call_args(payload, len(part), fds)
        fn_blob, call_args = serialize.split_call(payload, fds)
        fn = self.fn_cache.get(fn_blob)
        if fn is None:
            fn = self.fn_cache[fn_blob] = serialize.loads(fn_blob)
        self.last_part = bytes(payload[: serialize.FN_LEN_SIZE + len(fn_blob)])
        self.last_fn = fn
        return fn, call_args

    def run_items(
        self, tid: int, fn: Callable[..., Any], mode: int, items: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Run a batch: each item as its own call, answered at once as ``tid + offset``.

        A CANCEL for the batch (the parent taking back its rest for an idle worker)
        is answered at once by CUT (see drop), and the batch stops after the item
        running then.
        """
        self.running_batch = tid
        self.cut = False
        clock = time.monotonic
        peeked = clock()
        try:
            for offset, item in enumerate(items):
                if offset:
                    self.done += 1
                    if clock() - peeked >= _PEEK_EVERY:
                        if not self.receive(block=False):
                            return
                        peeked = clock()
                self.batch_next = offset + 1
                if self.cut:
                    return
                self.answer(tid + offset, self.result_fd, fn, mode, [item], kwargs)
        finally:
            self.running_batch = None

    def answer(
        self, tid: int, out: int, fn: Callable[..., Any], mode: int, data: Any,
        kwargs: dict[str, Any],
    ) -> None:
        """Run one call and send its RESULT (or ERROR)."""
        try:
            self.in_call = True
            if self.steal_pending:  # a SIGUSR1 came while the arguments were unpickled
                self.absorb()
            try:
                if mode == APPLY:
                    value = fn(*data, **kwargs)
                elif mode == STREAM:
                    value = self.stream(tid, out, fn(*data, **kwargs))
                else:
                    value = call(fn, mode, data, kwargs)
            finally:
                self.in_call = False
        except BaseException as exc:
            self.send(Kind.ERROR, tid, serialize.error_report(exc), out)
            return
        finally:
            del data, kwargs
        if type(value) in serialize.PLAIN:  # None, a number, a string: nothing to check
            self.send(Kind.RESULT, tid, marshal.dumps(value), out)
            return
        out_fds: list[int] = []
        try:
            data = serialize.dumps(value, out_fds)
        except BaseException as exc:
            exc.add_note(
                f"procpool: the result of {serialize.describe(fn)} "
                f"({type(value).__name__} object) could not be pickled"
            )
            self.send(Kind.ERROR, tid, serialize.error_report(exc, unsent=value), out)
            return
        finally:
            del value
        if not out_fds:
            self.send(Kind.RESULT, tid, data, out)
            return
        try:
            shm.send(self.fd_sock, out_fds)
        finally:
            shm.close_all(out_fds)
        self.send(Kind.RESULT_OOB, tid, shm.pack_count(len(out_fds), data), out)

    def stream(self, tid: int, out: int, values: Any) -> int:
        """Send each value of a streaming call as it comes (PARTIAL); their count."""
        count = 0
        for value in values:
            try:
                data = serialize.dumps(value)
            except BaseException as exc:
                exc.add_note(
                    f"procpool: value {count} of a stream ({type(value).__name__} object) "
                    f"could not be pickled"
                )
                raise
            self.send(Kind.PARTIAL, tid, data, out)
            count += 1
        return count

    def should_retire(self) -> bool:
        cfg = self.config
        if cfg.max_tasks is not None and self.done >= cfg.max_tasks:
            return True
        return cfg.max_memory is not None and _resident_bytes() > cfg.max_memory

    def on_waited_call(self) -> None:
        if not self.linger_for and time.perf_counter() - self.answered_at < 2 * _LINGER:
            self.linger_for = _LINGER  # the caller is back in a tight loop: linger again
        self.caller_waiting = True

    def linger(self) -> None:
        """Watch the pipe for a moment before sleeping, after answering a waiting caller.

        A caller blocked on each answer (``apply`` in a loop) usually sends its next
        call within microseconds, while waking a sleeping process costs tens of them
        on this kind of machine. Lingering stops as soon as it fails once, and resumes
        only when calls come back quickly again: a waste of at most one ``_LINGER``.
        """
        self.caller_waiting = False
        self.answered_at = now = time.perf_counter()
        if self.linger_for and not spin(self.poller, now + self.linger_for):
            self.linger_for = 0.0

    def loop(self) -> None:
        clock = time.monotonic
        peeked = 0.0
        recycles = self.config.max_tasks is not None or self.config.max_memory is not None
        while True:
            if not self.queue and self.caller_waiting:
                self.linger()
            if not self.queue:
                if self.stopping or not self.receive(block=True):
                    return
                peeked = clock()
            elif clock() - peeked >= _PEEK_EVERY:
                # Between calls, look for CANCELs of calls queued here (and for more
                # calls) - not before every call: that would cost a system call each.
                if not self.receive(block=False):
                    return
                peeked = clock()
            if not self.queue:
                if self.stopping:
                    return
                continue
            self.run_one(*self.queue.popleft())
            self.done += 1
            if recycles and self.should_retire():
                self.send(Kind.RETIRE, 0)
                return


def main(
    task_conn: Any, result_conn: Any, direct_conn: Any, fd_conn: Any, config: WorkerConfig
) -> None:
    """Entry point of a worker process (the ``target`` of its Process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's handlers; SIGTERM must end it (time limits,
    # cancel and terminate rely on that), whatever the parent installed.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(config.alive.fileno())
    worker = _Worker(
        task_conn.fileno(), result_conn.fileno(), direct_conn.fileno(), fd_conn.fileno(), config
    )
    signal.signal(signal.SIGUSR1, worker.on_steal)
    try:
        if worker.initialize():
            worker.loop()
    except BrokenPipeError:
        pass  # the parent is gone: nobody to answer
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
