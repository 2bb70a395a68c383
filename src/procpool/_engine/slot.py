"""The parent's record of one worker process (a *slot*).

Owner: the slot of its own fields. The worker table (:mod:`.workers`) owns the set of
slots; only the scheduler thread (or a caller the lending part lent this worker to,
under the table lock) changes a slot after it is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing.connection
import os
import select
import signal
import socket
import struct
import termios
from collections import deque
from typing import Any

from procpool._core.task import Task
from procpool._engine.pipes import _parent_fds, close_parent_fd, widen
from procpool._engine.zygote import REAP_WAIT, Zygote, fork_zygote_then_work
from procpool._worker import main as worker
from procpool._worker import serialize, shm
from procpool._worker.wire import HEADER, FrameReader, Kind, frame

_pack_header = HEADER.pack


class Slot:
    """A worker process as the scheduler sees it.

    With a ``zygote`` (the fork method, a replacement started by the scheduler
    thread), the zygote forks the worker and hands over the parent's pipe ends.
    """

    def __init__(
        self,
        ctx: Any,
        config: worker.WorkerConfig,
        zygote: Zygote | None = None,
        carry: Zygote | None = None,
    ) -> None:
        self.process: Any  # a multiprocessing.Process, or a ZygoteChild
        if zygote is not None:
            self.process, fds = zygote.start()
            self.task_fd, self.result_fd, self.direct_fd, self.fd_sock = fds
            _parent_fds.update(fds)
            for fd in (self.task_fd, self.result_fd, self.direct_fd):
                widen(fd)
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
        # Bytes put in the outbox, and bytes the pipe took: with the pipe's unread
        # count they say whether a dead worker had begun to read a call (never_read).
        self.queued = 0
        self.written = 0
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

    def _start(self, ctx: Any, config: worker.WorkerConfig, carry: Zygote | None) -> None:
        """Make the pipes and start the worker as a child of this process (one that
        forks the zygote first, with a ``carry``)."""
        task_r, self.task_fd = os.pipe()
        self.result_fd, result_w = os.pipe()
        # The answer to a lent call (Engine.call_direct) comes on a pipe of its own,
        # which the scheduler never watches: only the borrowing caller wakes for it.
        self.direct_fd, direct_w = os.pipe()
        for fd in (self.task_fd, self.result_fd, self.direct_fd):
            widen(fd)
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
            target=worker.main if carry is None else fork_zygote_then_work,
            args=args if carry is None else (carry.child_fd, *args),
            name="procpool-worker",
            daemon=True,
        )
        try:
            with serialize.import_lock:  # never fork in the middle of that import
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

    def assign(self, task: Task, now: float, kind: int = Kind.CALL) -> None:
        """Queue a call for this worker, to run after the calls it holds."""
        if not self.outstanding:
            self.head_started = now
        task.worker = self
        task.attempts += 1
        task.sent_at = self.queued
        self.sent += 1
        self.outstanding.append(task)
        if task.fds or task.items is not None:
            self.queue_call(task, kind)
        else:  # (queue_call's common case, inline: this runs once per task)
            payload = task.payload
            data = _pack_header(len(payload), kind, task.tid) + payload
            self.queued += len(data)
            self.outbox.append(data)

    def queue(self, kind: int, tid: int, payload: bytes = b"") -> None:
        self._put(frame(kind, tid, payload))

    def _put(self, data: bytes) -> None:
        self.queued += len(data)
        self.outbox.append(data)

    def queue_call(self, task: Task, kind: int = Kind.CALL) -> None:
        if not task.fds:
            if task.items is not None:
                kind = Kind.CALL_ITEMS
            self._put(frame(kind, task.tid, task.payload))
            return
        # The descriptors go first: the worker takes them when it reads this frame.
        try:
            shm.send(self.fd_sock, task.fds)
        except OSError:
            return  # the worker is gone; its sentinel will report it
        self._put(frame(Kind.CALL_OOB, task.tid, shm.pack_count(len(task.fds), task.payload)))

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
            self.written += n
            self.unsent = self.unsent[n:] if n < len(self.unsent) else None
            if self.unsent is not None:
                return False

    def never_read(self, task: Task) -> bool:
        """Whether this (dead) worker never read a byte of ``task``'s frame: what it
        consumed of its task pipe ends before the frame starts. False when unsure."""
        try:
            unread = struct.unpack("i", fcntl.ioctl(self.task_fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            return False
        consumed: int = self.written - unread
        return consumed <= task.sent_at

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
        self.process.join(REAP_WAIT)
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

