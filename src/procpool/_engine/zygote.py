"""The zygote: a single-threaded copy of a fork pool's parent that forks its
replacement workers.

Under the fork method, a worker that replaces a dead one would be forked by the
scheduler thread, in a process with other threads (the caller's, the scheduler, the
callbacks): the child gets a copy of every lock as it was, held or not, and only
the forking thread, so a lock some other thread held at that instant is never
released there (Python 3.12+ warns: "This process is multi-threaded, use of fork()
may lead to deadlocks in the child"). So a fork pool also forks, next to its first
workers and from the same thread, a *zygote*: a copy of the process that starts no
thread and does nothing but fork replacement workers on request. Each replacement
is a fork of a single-threaded process, with the parent's state as it was when the
pool started, like the first workers. See docs/architecture.md.
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
from typing import Any

from procpool._engine.pipes import _parent_fds, close_parent_fd
from procpool._worker import main as worker

# How long reap() waits for a worker whose sentinel fired to become waitable.
REAP_WAIT = 5.0

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
        deadline = _now() + REAP_WAIT
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
            self.returncode = self._zygote.exit_code(self.pid, REAP_WAIT)

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


def fork_zygote_then_work(zygote_fd: int, *args: Any) -> None:
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
    worker.main(*args)


def _own_sentinel_write_end() -> int | None:
    """The descriptor by which this fork child's parent sees it exit (its sentinel's
    write end: ``child_w`` in ``multiprocessing.popen_fork.Popen._launch``, 3.11-3.13)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_launch" and isinstance(frame.f_locals.get("child_w"), int):
            return int(frame.f_locals["child_w"])
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _zygote_main(sock_fd: int, config: worker.WorkerConfig) -> None:
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
            child.join(REAP_WAIT)
            if child.exitcode is None:
                child.kill()
                child.join()
        sock.detach()  # the descriptor closes as this process exits


def _zygote_fork(sock: socket.socket, ctx: Any, config: worker.WorkerConfig) -> Any:
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
        target=worker.main, args=(*conns, config), name="procpool-worker", daemon=True
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
