"""A prefork worker: threads that accept on the inherited listening socket and serve.

Each of the ``threads`` threads waits for a connection in its own epoll set, with
the listening socket added ``EPOLLEXCLUSIVE`` (the kernel wakes one waiter, not every
thread of every worker) beside the worker's stop pipe, then accepts without blocking.
With ``--max-connections`` each worker has one thread more, and at most ``threads``
a worker (and the limit in all) serve at once across the server (the board's limit),
so some thread is always free to tell an extra client ``ERR busy`` at once. Without
it, clients beyond the threads wait in the listen backlog, as with gunicorn.

The main thread only waits for signals (``sigwait``; they are blocked in every
thread): SIGTERM stops gracefully (close the stop pipe so no thread accepts again,
half-close the reading side of every open connection so each thread answers what it
has read and finishes, wait up to the graceful timeout), SIGQUIT at once, SIGUSR1
(from a thread that reached ``--max-requests``) retires: say so to the supervisor,
which starts a replacement, then stop gracefully. The worker dies with the supervisor
(``PR_SET_PDEATHSIG``), even a ``kill -9``ed one.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from procpool._cli.serve.board import Board
from procpool._cli.serve.connection import Limits, bounce, converse, peer_name
from procpool._cli.serve.handlers import Handler

PR_SET_PDEATHSIG = 1
INIT_FAILED = 3
ACCEPT_RETRY = 0.1  # after EMFILE and the like: let connections close first
READY, RETIRING = b"R", b"X"
_WAITED = {signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1}


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Everything a worker needs, fixed before the first fork."""

    listener: socket.socket
    handler: Handler
    limits: Limits
    threads: int
    handler_timeout: float | None
    graceful_timeout: float
    access_log: bool
    worker_init: Callable[[], object] | None
    spare: bool  # one more thread than ``threads``, to answer ERR busy (--max-connections)


def log(text: str) -> None:
    os.write(2, f"procpool serve: {text}\n".encode(errors="backslashreplace"))


def wake_only(signum: int, frame: object) -> None:
    """A Python handler that does nothing, so the signal reaches the wakeup pipe."""


def worker_main(
    setup: WorkerSetup, board: Board, index: int, status: int, max_requests: int
) -> NoReturn:
    """The forked child's whole life; never returns."""
    code = 0
    try:
        _die_with(os.getppid())
        _own_signals()
        if setup.worker_init is not None:
            try:
                setup.worker_init()
            except BaseException:
                log(f"worker {os.getpid()}: --worker-init failed:\n{traceback.format_exc()}")
                os._exit(INIT_FAILED)
        Worker(setup, board, index, status, max_requests).run()
    except BaseException:
        log(f"worker {os.getpid()} failed:\n{traceback.format_exc()}")
        code = 1
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _own_signals() -> None:
    signal.set_wakeup_fd(-1)  # the supervisor's
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # the supervisor's to act on
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)


class Worker:
    def __init__(
        self, setup: WorkerSetup, board: Board, index: int, status: int, max_requests: int
    ) -> None:
        self.setup = setup
        self.board = board
        self.index = index
        self.status = status
        self.max_requests = max_requests
        self.pid = os.getpid()
        self.stopping = False
        self.open: set[socket.socket] = set()
        self.served = itertools.count(1)
        self.stop_r, self.stop_w = os.pipe()
        self.main = threading.main_thread().ident
        self.turn = threading.Lock()  # held by the one thread that may accept

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._accept_loop, args=(n,), name=f"serve-{n}")
            for n in range(self.setup.threads + self.setup.spare)
        ]
        for thread in threads:
            thread.start()
        os.write(self.status, READY)
        sig = signal.sigwait(_WAITED)
        if sig == signal.SIGQUIT:
            return
        if sig == signal.SIGUSR1:
            os.write(self.status, RETIRING)
        self._stop(threads)

    def _stop(self, threads: list[threading.Thread]) -> None:
        self.stopping = True
        os.close(self.stop_w)
        for conn in list(self.open):
            _shut_reads(conn)
        deadline = time.monotonic() + self.setup.graceful_timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self, thread: int) -> None:
        """Take the turn, accept, serve; pass the turn on when the connection first
        waits on its client, or when it ends.

        One thread a worker accepts at a time. A short connection (a line, then EOF)
        is served to its end by the thread that accepted it, with no other thread of
        the worker running: threads of one process contend for the GIL, which costs
        about 15% of the connection rate when all of them accept. A connection that
        waits (a persistent or idle client) passes the turn, so --threads of them
        are served at once and an idle client never blocks the next.
        """
        slot = self.board.slot(self.index, thread)
        with select.epoll() as ep:
            ep.register(self.setup.listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            ep.register(self.stop_r, select.EPOLLIN)
            while True:
                self.turn.acquire()
                accepted = None if self.stopping else self._accept(ep)
                if accepted is None:
                    self.turn.release()
                    return
                passed = False

                def pass_turn() -> None:
                    nonlocal passed
                    if not passed:
                        passed = True
                        self.turn.release()

                self._serve(*accepted, slot, pass_turn)
                pass_turn()

    def _accept(self, ep: select.epoll) -> tuple[socket.socket, object] | None:
        """The next connection, or None once the worker stops."""
        listener = self.setup.listener
        while not self.stopping:
            try:
                fd, addr = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                if any(fd == self.stop_r for fd, _ in ep.poll()):
                    return None
                continue
            except OSError as exc:
                if exc.errno != errno.ECONNABORTED:
                    log(f"worker {self.pid}: accept failed: {exc}")
                    ep.poll(ACCEPT_RETRY)
                continue
            return socket.socket(listener.family, socket.SOCK_STREAM, 0, fileno=fd), addr
        return None

    def _serve(
        self, conn: socket.socket, addr: object, slot: int, pass_turn: Callable[[], None]
    ) -> None:
        peer = peer_name(addr)
        if self.setup.spare and not self.board.enter(slot):
            pass_turn()
            bounce(conn)
            if self.setup.access_log:
                log(f"conn peer={peer} close=busy worker={self.pid}")
            return
        self.open.add(conn)
        if self.stopping:  # raced _stop's sweep
            _shut_reads(conn)
        watch = None
        if self.setup.handler_timeout:
            board = self.board

            def watch(running: bool) -> None:
                board.busy(slot, time.monotonic() if running else 0.0)

        try:
            talk = converse(
                conn, self.setup.handler, self.setup.limits, peer, watch, pass_turn
            )
        finally:
            self.open.discard(conn)
            self.board.leave(slot)
        if self.stopping and talk.reason == "eof":
            talk.reason = "server stopping"
        if talk.trace:
            log(f"worker {self.pid}: handler raised on {peer}:\n{talk.trace.rstrip()}")
        if self.setup.access_log:
            log(talk.log_line(self.pid))
        if next(self.served) == self.max_requests:
            signal.pthread_kill(self.main, signal.SIGUSR1)  # type: ignore[arg-type]


def _shut_reads(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)
    except OSError:
        pass


def flush_std() -> None:
    """Before a fork: nothing buffered twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
