"""Tasks and the parent's record of one worker process (a *slot*).

Only the scheduler thread touches these objects after they are created.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import select
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from . import _serialize, _shm, _worker
from ._wire import FrameReader, Kind, frame

# How long reap() waits for a worker whose sentinel fired to become waitable.
_REAP_WAIT = 5.0

# Parent-side pipe ends of every live pool. A child forked for one pool must not keep
# another worker's pipe open (its EOF would never come), so fork children close them.
_parent_fds: set[int] = set()


def _close_parent_fds_in_child() -> None:
    for fd in list(_parent_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _parent_fds.clear()


os.register_at_fork(after_in_child=_close_parent_fds_in_child)


def parent_pipe() -> tuple[int, int]:
    """An os.pipe whose ends are both registered as parent-only."""
    r, w = os.pipe()
    _parent_fds.update((r, w))
    return r, w


def close_parent_fd(fd: int) -> None:
    _parent_fds.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


class Sink(Protocol):
    """Where a task's outcome goes: an AsyncResult, a map, an imap iterator, a Future."""

    def _resolve(self, index: int, ok: bool, value: Any) -> object: ...


_F_SETPIPE_SZ = 1031  # Linux: fcntl.F_SETPIPE_SZ (named in the fcntl module on 3.10+)
_PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    """Give a pipe 1 MiB of buffer (Linux): a large frame then crosses in 16 times
    fewer writes and wake-ups than through the default 64 KiB."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), _PIPE_SIZE)


class _Discard:
    """The sink of a task already resolved: later outcomes go nowhere."""

    def _resolve(self, index: int, ok: bool, value: Any) -> None:
        pass


DISCARD = _Discard()


# Task ids are multiples of this; the items of a batch answer as tid + 0, 1, 2, ...
TID_STEP = 1 << 16


class Task:
    """One call (or one chunk of a map) on its way through the pool.

    A *batch* (``items`` set) carries several one-item chunks of an imap in one
    frame; the worker runs and answers them one by one, as ``tid + offset``, and each
    is resolved at ``index + offset`` of the sink. ``answered`` items are done; the
    next one is the one running. ``remake(items)`` pickles a rest of the batch again
    (when a worker dies in the middle of it, or the batch is cut to share it out).
    A worker that dies before it has ``unpacked`` a batch may have died of any item's
    pickle: the items are then sent again one by one, and only the guilty one fails.
    """

    __slots__ = (
        "abandoned",
        "answered",
        "attempts",
        "fds",
        "index",
        "items",
        "name",
        "payload",
        "remake",
        "retries",
        "sink",
        "tid",
        "timeout",
        "unpacked",
        "worker",
    )

    def __init__(
        self, payload: bytes, sink: Sink, index: int, name: str, options: tuple[float | None, int]
    ) -> None:
        self.tid = 0
        self.payload = payload
        self.sink = sink
        self.index = index
        self.name = name
        self.timeout, self.retries = options
        self.attempts = 0
        self.abandoned = False  # its outcome no longer matters (cancelled, a failed map)
        self.worker: Slot | None = None
        self.fds: tuple[int, ...] = () if type(payload) is bytes else payload.fds  # type: ignore[attr-defined]
        self.items: list[Any] | None = None
        self.remake: Callable[[list[Any]], bytes] | None = None
        self.answered = 0
        self.unpacked = False  # the worker has unpickled this batch (UNPACKED)

    def part(self, start: int, stop: int | None = None) -> Task:
        """A new task for the items ``start:stop`` of this batch (one item: a plain call)."""
        assert self.items is not None and self.remake is not None
        items = self.items[start:stop]
        task = Task(self.remake(items), self.sink, self.index + start, self.name,
                    (self.timeout, self.retries))
        if len(items) > 1:
            task.items, task.remake = items, self.remake
        return task

    def release(self) -> None:
        """Close the memfds of a finished task (its large buffers; see OOBPayload)."""
        if self.fds:
            self.fds = ()
            self.payload.release()  # type: ignore[attr-defined]


class Slot:
    """A worker process as the scheduler sees it.

    With a ``zygote`` (the fork method, a replacement started by the scheduler
    thread), the zygote forks the worker and hands over the parent's pipe ends.
    """

    def __init__(
        self,
        ctx: Any,
        config: _worker.WorkerConfig,
        zygote: Zygote | None = None,
        carry: Zygote | None = None,
    ) -> None:
        self.process: Any  # a multiprocessing.Process, or a ZygoteChild
        if zygote is not None:
            self.process, fds = zygote.start()
            self.task_fd, self.result_fd, self.direct_fd, self.fd_sock = fds
            _parent_fds.update(fds)
            for fd in (self.task_fd, self.result_fd, self.direct_fd):
                _widen(fd)
        else:
            self._start(ctx, config, carry)
        for fd in (self.task_fd, self.result_fd, self.direct_fd):
            os.set_blocking(fd, False)
        self.pid: int = self.process.pid
        self.sentinel: int = self.process.sentinel
        self.reader = FrameReader(self.result_fd)
        self.direct_reader = FrameReader(self.direct_fd)
        self.outbox: list[bytes] = []
        self.unsent: memoryview | None = None
        self.outstanding: deque[Task] = deque()
        self.head_started = 0.0
        self.sent = 0
        self.ready = False
        self.retiring = False
        self.stop_sent = False
        self.doomed = False
        self.stealing = False
        self.lent = False
        self.kill_at: float | None = None
        self.init_error: str | None = None
        self._direct: select.poll | None = None

    def _start(self, ctx: Any, config: _worker.WorkerConfig, carry: Zygote | None) -> None:
        """Make the pipes and start the worker as a child of this process (one that
        forks the zygote first, with a ``carry``)."""
        task_r, self.task_fd = os.pipe()
        self.result_fd, result_w = os.pipe()
        # The answer to a lent call (Engine.call_direct) comes on a pipe of its own,
        # which the scheduler never watches: only the borrowing caller wakes for it.
        self.direct_fd, direct_w = os.pipe()
        for fd in (self.task_fd, self.result_fd, self.direct_fd):
            _widen(fd)
        # Descriptors of large buffers (memfds) travel on this socket, beside the pipes.
        parent_sock, child_sock = (
            s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        )
        self.fd_sock = parent_sock
        _parent_fds.update((self.task_fd, self.result_fd, self.direct_fd, self.fd_sock))
        child_task = multiprocessing.connection.Connection(task_r, writable=False)
        child_result = multiprocessing.connection.Connection(result_w, readable=False)
        child_direct = multiprocessing.connection.Connection(direct_w, readable=False)
        child_fds = multiprocessing.connection.Connection(child_sock)
        args: tuple[Any, ...] = (child_task, child_result, child_direct, child_fds, config)
        self.process = ctx.Process(
            target=_worker.main if carry is None else _fork_zygote_then_work,
            args=args if carry is None else (carry.child_fd, *args),
            name="procpool-worker",
            daemon=True,
        )
        try:
            with _serialize.import_lock:  # never fork in the middle of that import
                self.process.start()
        except BaseException:
            self.close_fds()
            raise
        finally:
            if carry is not None:
                carry.handed_over()
            child_task.close()
            child_result.close()
            child_direct.close()
            child_fds.close()

    def direct_poller(self) -> select.poll:
        """A poll set of this worker's direct pipe and sentinel, for a caller
        borrowing the worker (made once: a blocking apply in a loop reuses it)."""
        if self._direct is None:
            self._direct = select.poll()
            for fd in (self.direct_fd, self.sentinel):
                self._direct.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        return self._direct

    def usable(self) -> bool:
        return self.ready and not (self.doomed or self.retiring or self.stop_sent or self.lent)

    def lendable(self) -> bool:
        """Idle and healthy: may be lent to a caller for one direct call."""
        return self.usable() and not self.outstanding and not self.outbox and self.unsent is None

    def queue(self, kind: int, tid: int, payload: bytes = b"") -> None:
        self.outbox.append(frame(kind, tid, payload))

    def queue_call(self, task: Task, kind: int = Kind.CALL) -> None:
        if not task.fds:
            if task.items is not None:
                kind = Kind.CALL_ITEMS
            self.outbox.append(frame(kind, task.tid, task.payload))
            return
        # The descriptors go first: the worker takes them when it reads this frame.
        try:
            _shm.send(self.fd_sock, task.fds)
        except OSError:
            return  # the worker is gone; its sentinel will report it
        self.outbox.append(
            frame(Kind.CALL_OOB, task.tid, _shm.pack_count(len(task.fds), task.payload))
        )

    def flush(self) -> bool:
        """Write as much of the outbox as the pipe takes. True when all was written.

        What the pipe did not take waits as a memoryview and an offset: slicing the
        bytes instead would copy the rest of a large frame after every 64 KiB write.
        """
        while True:
            if self.unsent is None:
                if not self.outbox:
                    return True
                data = self.outbox[0] if len(self.outbox) == 1 else b"".join(self.outbox)
                self.outbox = []
                self.unsent = memoryview(data)
            try:
                n = os.write(self.task_fd, self.unsent)
            except BlockingIOError:
                return False
            except OSError:
                # The worker is dead or dying; its sentinel will report it.
                self.unsent = None
                self.outbox.clear()
                return True
            self.unsent = self.unsent[n:] if n < len(self.unsent) else None
            if self.unsent is not None:
                return False

    def stop(self) -> None:
        self.queue(Kind.STOP, 0)
        self.stop_sent = True

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(self.pid, signum)

    def doom(self, now: float, grace: float) -> None:
        """Stop the worker: SIGTERM now, SIGKILL if it is still there after ``grace``."""
        if self.doomed:
            return
        self.doomed = True
        self.signal(signal.SIGTERM)
        self.kill_at = now + grace

    def reap(self) -> int | None:
        """Collect the exit code of a worker whose sentinel has fired.

        The kernel closes a dying process's files (so the sentinel fires) before the
        process can be waited for: a non-blocking wait here would sometimes see no
        exit code and leave a zombie. The wait is bounded in case a worker closed its
        sentinel's write end without exiting.
        """
        self.process.join(_REAP_WAIT)
        code: int | None = self.process.exitcode
        return code

    def close_fds(self) -> None:
        close_parent_fd(self.task_fd)
        close_parent_fd(self.result_fd)
        close_parent_fd(self.direct_fd)
        close_parent_fd(self.fd_sock)
        # The sentinel's fd, not Process.close(): multiprocessing's exit hook may be
        # joining this (reaped) process from the main thread, and join() on a closed
        # Process raises there. The Process itself goes with the slot.
        closer = getattr(getattr(self.process, "_popen", None), "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                closer()


# ------------------------------------------------------------------ the zygote
#
# Under the fork method, a worker that replaces a dead one would be forked by the
# scheduler thread, in a process with other threads (the caller's, the scheduler, the
# callbacks): the child gets a copy of every lock as it was, held or not, and only
# the forking thread, so a lock some other thread held at that instant is never
# released there (Python 3.12+ warns: "This process is multi-threaded, use of fork()
# may lead to deadlocks in the child"). So a fork pool also forks, next to its first
# workers and from the same thread, a *zygote*: a copy of the process that starts no
# thread and does nothing but fork replacement workers on request. Each replacement
# is a fork of a single-threaded process, with the parent's state as it was when the
# pool started, like the first workers. See docs/architecture.md.

_START = b"S"
_EXITED = b"X"
_FAILED = b"F"
_HELLO = b"Z"
_STOP = b"Q"
_MSG = struct.Struct("<cqi")  # kind, pid, exit code
_FDS_PER_WORKER = 5  # task (write end), result, direct (read ends), fd socket, sentinel


class Zygote:
    """The parent's end of a pool's zygote (only the scheduler thread uses it)."""

    def __init__(self) -> None:
        parent, child = (
            s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        )
        self.fd = parent
        _parent_fds.add(parent)
        # The zygote's end, until the first worker is started with it (and forks the
        # zygote as it starts, before any thread: see _fork_zygote_then_work). So the
        # zygote is no child of this process, and it costs this thread no fork.
        self.child_fd: int | None = child
        self._exits: dict[int, int] = {}
        self.pid: int | None = None  # the zygote says it first

    def handed_over(self) -> None:
        if self.child_fd is not None:
            os.close(self.child_fd)
            self.child_fd = None

    def start(self) -> tuple[ZygoteChild, tuple[int, int, int, int]]:
        """Have the zygote fork a worker: its handle and the parent's pipe ends."""
        os.write(self.fd, _START)
        while True:
            data, fds = self._receive(None)
            kind, pid, code = _MSG.unpack(data)
            if kind == _EXITED:
                self._exits[pid] = code
                continue
            if kind == _HELLO:
                self.pid = pid
                continue
            if kind == _FAILED or len(fds) != _FDS_PER_WORKER:
                for fd in fds:
                    os.close(fd)
                raise OSError("procpool's zygote could not start a worker")
            task, result, direct, sock, sentinel = fds
            return ZygoteChild(self, pid, sentinel), (task, result, direct, sock)

    def _receive(self, timeout: float | None) -> tuple[bytes, list[int]]:
        if timeout is not None and not select.select([self.fd], [], [], timeout)[0]:
            raise TimeoutError
        sock = socket.socket(fileno=self.fd)
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MSG.size, _FDS_PER_WORKER)
        finally:
            sock.detach()
        if not data:
            raise EOFError("procpool's zygote is gone")
        return data, fds

    def exit_code(self, pid: int, timeout: float) -> int | None:
        """The exit code of a worker the zygote forked, once the zygote has reaped it."""
        deadline = _now() + timeout
        while pid not in self._exits:
            left = max(0.0, deadline - _now())
            try:
                data, fds = self._receive(left)
            except (TimeoutError, EOFError, OSError):
                return None
            for fd in fds:
                os.close(fd)
            kind, other, code = _MSG.unpack(data)
            if kind == _EXITED:
                self._exits[other] = code
            elif kind == _HELLO:
                self.pid = other
        return self._exits.pop(pid)

    def close(self) -> None:
        """End the zygote and wait until it is gone (its end of the socket closes).

        An EOF on its socket tells it to stop: it ends the workers it still has (none,
        when the pool wound down), then exits. SIGKILL if it takes too long.
        """
        self.handed_over()  # (the first worker never started: no zygote to wait for)
        with contextlib.suppress(OSError):
            os.write(self.fd, _STOP)
        deadline = _now() + _REAP_WAIT
        while True:
            try:
                data, fds = self._receive(max(0.0, deadline - _now()))
            except TimeoutError:
                if self.pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(self.pid, signal.SIGKILL)
                break
            except (EOFError, OSError):
                break  # gone
            for fd in fds:
                os.close(fd)
            kind, other, _ = _MSG.unpack(data)
            if kind == _HELLO:
                self.pid = other
        close_parent_fd(self.fd)


def _now() -> float:
    import time

    return time.monotonic()


class ZygoteChild:
    """A worker forked by the zygote, as a ``multiprocessing.Process`` looks to its
    parent: ``pid``, ``name``, ``sentinel``, ``join()``, ``exitcode``, ``is_alive()``,
    ``terminate()``, ``kill()``, ``close()``. It is the zygote's child, so the zygote
    reaps it and sends its exit code."""

    name = "procpool-worker"
    daemon = True

    def __init__(self, zygote: Zygote, pid: int, sentinel: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.sentinel = sentinel
        self.returncode: int | None = None
        self._popen = self  # where views look for a reaped worker's code

    @property
    def exitcode(self) -> int | None:
        return self.returncode

    def join(self, timeout: float | None = None) -> None:
        if self.returncode is None and self.sentinel >= 0:
            if not select.select([self.sentinel], [], [], timeout)[0]:
                return
            self.returncode = self._zygote.exit_code(self.pid, _REAP_WAIT)

    def is_alive(self) -> bool:
        if self.returncode is not None or self.sentinel < 0:
            return False
        return not select.select([self.sentinel], [], [], 0)[0]

    def terminate(self) -> None:
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


def _fork_zygote_then_work(zygote_fd: int, *args: Any) -> None:
    """The first worker of a fork pool: fork the zygote, then be a worker.

    Forked from the pool's caller before the scheduler thread exists, this process
    has one thread yet; so has its fork, the zygote. (The zygote outlives this worker
    if it must: it is then reparented, and its exit code goes to init.)
    """
    sentinel_w = _own_sentinel_write_end()
    if os.fork() == 0:
        code = 0
        try:
            for conn in args[:4]:
                conn.close()  # the first worker's own pipes
            # This worker's sentinel fires when every copy of its write end is closed:
            # the zygote must not keep one, or the worker's death would go unseen.
            if sentinel_w is None:
                raise RuntimeError("procpool: the worker's sentinel was not found")
            os.close(sentinel_w)
            _zygote_main(zygote_fd, args[4])
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)
    os.close(zygote_fd)
    _worker.main(*args)


def _own_sentinel_write_end() -> int | None:
    """The descriptor by which this fork child's parent sees it exit (its sentinel's
    write end: ``child_w`` in ``multiprocessing.popen_fork.Popen._launch``, 3.11-3.13)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_launch" and isinstance(frame.f_locals.get("child_w"), int):
            return int(frame.f_locals["child_w"])
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _zygote_main(sock_fd: int, config: _worker.WorkerConfig) -> None:
    """The zygote: fork a worker for each request, report each worker's exit code.

    Single-threaded by construction: it starts no thread (its parent's death is an EOF
    on the alive pipe, watched in the same poll as the requests).
    """
    import multiprocessing

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctx = multiprocessing.get_context("fork")
    # multiprocessing lets no daemonic process have children; the zygote is daemonic
    # for its parent's sake only (ended at the parent's exit), and its workers are.
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]
    _parent_fds.add(sock_fd)  # workers it forks close it
    alive = config.alive.fileno()
    poll = select.poll()
    poll.register(sock_fd, select.POLLIN)
    poll.register(alive, select.POLLIN)
    children: dict[int, Any] = {}  # sentinel -> Process
    sock = socket.socket(fileno=sock_fd)
    try:
        sock.send(_MSG.pack(_HELLO, os.getpid(), 0))
        while True:
            for fd, _ in poll.poll():
                if fd == alive:
                    return  # the parent died; the workers go too (their own watchdogs)
                if fd == sock_fd:
                    try:
                        request = os.read(sock_fd, 16)
                    except OSError:  # the pool's end was closed with a message unread
                        request = b""
                    if request in (b"", _STOP):
                        return  # the pool is done
                    child = _zygote_fork(sock, ctx, config)
                    if child is not None:
                        children[child.sentinel] = child
                        poll.register(child.sentinel, select.POLLIN)
                elif fd in children:
                    child = children.pop(fd)
                    poll.unregister(fd)
                    child.join()
                    code = child.exitcode
                    with contextlib.suppress(OSError):
                        sock.send(_MSG.pack(_EXITED, child.pid, -255 if code is None else code))
                    child.close()
    finally:
        for child in children.values():  # none when the pool wound down as it should
            child.terminate()
        for child in children.values():
            child.join(_REAP_WAIT)
            if child.exitcode is None:
                child.kill()
                child.join()
        sock.detach()  # the descriptor closes as this process exits


def _zygote_fork(sock: socket.socket, ctx: Any, config: _worker.WorkerConfig) -> Any:
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    direct_r, direct_w = os.pipe()
    parent_sock, child_sock = (
        s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    )
    ends = (task_w, result_r, direct_r, parent_sock)
    _parent_fds.update(ends)  # the worker must not keep them
    conns = (
        multiprocessing.connection.Connection(task_r, writable=False),
        multiprocessing.connection.Connection(result_w, readable=False),
        multiprocessing.connection.Connection(direct_w, readable=False),
        multiprocessing.connection.Connection(child_sock),
    )
    process = ctx.Process(
        target=_worker.main, args=(*conns, config), name="procpool-worker", daemon=True
    )
    try:
        process.start()
    except Exception:
        with contextlib.suppress(OSError):
            sock.send(_MSG.pack(_FAILED, 0, 0))
        process = None
    else:
        sentinel = os.dup(process.sentinel)
        try:
            socket.send_fds(sock, [_MSG.pack(_START, process.pid, 0)], [*ends, sentinel])
        finally:
            os.close(sentinel)
    finally:
        for conn in conns:
            conn.close()
        for fd in ends:
            close_parent_fd(fd)
    return process
