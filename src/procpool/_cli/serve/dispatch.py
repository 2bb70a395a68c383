"""The tutorial's model, made correct: the parent accepts, a procpool Pool serves.

Each accepted connection is one ``apply_async`` task; the socket travels to the worker
the way multiprocessing sends sockets (a duplicate handed over a Unix socket), and the
result (the connection's facts) comes back to a callback, which logs it, as the
tutorial's callbacks do. The parent keeps its copy of the socket until the task
ends: it can still half-close it for a graceful stop and close it if the worker dies,
and closing it early is safe too, since the worker ends every connection with
``shutdown`` (the tutorial's server lost connections by closing too soon).

Bounded: with ``workers + queue`` connections in service the parent stops accepting
(new clients wait in the kernel's backlog) until one ends; with ``--max-connections M``
it goes on accepting and answers ``ERR busy`` beyond M. A handler that runs past
``--handler-timeout`` is ended by ``SIGALRM``'s default action, which kills even a
handler stuck in C; the Pool replaces the worker and fails only that connection.

One thread waits on the listening socket, the signal wakeup pipe and a pipe the
callbacks write to. SIGHUP (and SIGTTIN/SIGTTOU, with one worker more or fewer) starts
a new Pool for new connections and closes the old one, whose connections finish.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import procpool
from procpool._cli.serve.connection import Conversation, Limits, bounce, converse, peer_name
from procpool._cli.serve.handlers import Handler, load_function, load_handler
from procpool._cli.serve.worker import log, wake_only

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    handler: str
    worker_init: str | None
    limits: Limits
    workers: int
    queue: int
    max_connections: int | None
    max_requests: int
    handler_timeout: float | None
    graceful_timeout: float
    access_log: bool


# -- in the workers

_handler: Handler | None = None
_alarm: float | None = None


def _init_worker(handler: str, worker_init: str | None, handler_timeout: float | None) -> None:
    global _handler, _alarm
    _handler = load_handler(handler)
    _alarm = handler_timeout
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if worker_init:
        load_function(worker_init, "--worker-init")()


def _watch(running: bool) -> None:
    assert _alarm is not None
    signal.setitimer(signal.ITIMER_REAL, _alarm if running else 0.0)


def _probe() -> int:
    return os.getpid()


def serve_connection(conn: socket.socket, peer: str, limits: Limits) -> Conversation:
    """One task: the whole conversation with one client."""
    assert _handler is not None
    talk = converse(conn, _handler, limits, peer, _watch if _alarm else None, shared=True)
    talk.trace = talk.trace and talk.trace.rstrip()
    return talk


# -- in the parent


@dataclass(slots=True)
class Open:
    conn: socket.socket
    peer: str
    pool: procpool.Pool


class DispatchServer:
    def __init__(self, listener: socket.socket, plan: DispatchPlan) -> None:
        self.listener = listener
        self.plan = plan
        self.workers = plan.workers
        self.open: dict[int, Open] = {}
        self.ended: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self.next_id = 0
        self.pools: list[procpool.Pool] = []
        self.accepting = False
        self.stop_deadline = 0.0
        self.failed = ""
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.done_r, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self) -> int:
        previous: dict[int, Any] = {sig: signal.signal(sig, wake_only) for sig in _SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._on_signals)
        self.selector.register(self.done_r, selectors.EVENT_READ, self._on_done)
        self.listener.setblocking(False)
        try:
            self._new_pool()
            while not (self.stop_deadline and not self.open):
                self._pace()
                timeout = None
                if self.stop_deadline:
                    timeout = max(0.0, self.stop_deadline - time.monotonic())
                    if timeout == 0.0:
                        break
                for key, _ in self.selector.select(timeout):
                    key.data()
                self._retire_idle_pools()
        finally:
            self._close(previous, old_wakeup)
        if self.failed:
            log(f"error: {self.failed}")
            return 1
        return 0

    def _close(self, previous: dict[int, Any], old_wakeup: int) -> None:
        for pool in self.pools:
            pool.terminate()
            pool.join()
        for entry in self.open.values():
            entry.conn.close()
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self.selector.close()
        for fd in (self.wake_r, self.wake_w, self.done_r, self.done_w):
            os.close(fd)

    # -- accepting

    def _pace(self) -> None:
        """Accept while there is room (always, with --max-connections)."""
        room = self.plan.max_connections is not None or (
            len(self.open) < self.workers + self.plan.queue
        )
        want = room and not self.stop_deadline
        if want and not self.accepting:
            self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        elif self.accepting and not want:
            self.selector.unregister(self.listener)
        self.accepting = want

    def _accept(self) -> None:
        try:
            conn, addr = self.listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        except OSError as exc:  # EMFILE and the like: the backlog keeps the client
            log(f"accept failed: {exc}")
            return
        peer = peer_name(addr)
        limit = self.plan.max_connections
        if limit is not None and len(self.open) >= limit:
            bounce(conn)
            if self.plan.access_log:
                log(f"conn peer={peer} close=busy")
            return
        self._submit(conn, peer)

    def _submit(self, conn: socket.socket, peer: str) -> None:
        token, self.next_id = self.next_id, self.next_id + 1
        pool = self.pools[-1]
        self.open[token] = Open(conn, peer, pool)

        def done(talk: Conversation) -> None:
            self.ended.put((token, talk, None))
            os.write(self.done_w, b"\0")

        def failed(exc: BaseException) -> None:
            self.ended.put((token, None, exc))
            os.write(self.done_w, b"\0")

        pool.apply_async(
            serve_connection, (conn, peer, self.plan.limits),
            callback=done, error_callback=failed,
        )  # fmt: skip

    # -- what ended

    def _on_done(self) -> None:
        try:
            os.read(self.done_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                token, talk, exc = self.ended.get_nowait()
            except queue.Empty:
                return
            if token == -1:  # the probe
                self.failed = f"the workers cannot start: {exc}"
                self._stop(graceful=False)
                continue
            entry = self.open.pop(token)
            _end(entry.conn)
            self._report(entry, talk, exc)

    def _report(self, entry: Open, talk: Conversation | None, exc: BaseException | None) -> None:
        if talk is not None:
            if talk.trace:
                log(f"handler raised on {entry.peer}:\n{talk.trace}")
            if self.plan.access_log:
                log(talk.log_line())
            return
        if isinstance(exc, procpool.PoolBrokenError):
            self.failed = f"the workers cannot start: {exc}"
            self._stop(graceful=False)
        why = "handler timeout" if getattr(exc, "signal", None) == "SIGALRM" else "worker lost"
        log(f"conn peer={entry.peer} close={why} error={type(exc).__name__}: {exc}")

    # -- signals and pools

    def _on_signals(self) -> None:
        try:
            received = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        for sig in received:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(graceful=not self.stop_deadline)
            elif self.stop_deadline:
                continue
            elif sig == signal.SIGHUP:
                log(f"SIGHUP: a new pool of {self.workers} workers for new connections")
                self._new_pool()
            elif sig in (signal.SIGTTIN, signal.SIGTTOU):
                self.workers = max(1, self.workers + (1 if sig == signal.SIGTTIN else -1))
                log(f"{signal.Signals(sig).name}: a new pool of {self.workers} workers")
                self._new_pool()

    def _new_pool(self) -> None:
        plan = self.plan
        pool = procpool.Pool(
            self.workers, initializer=_init_worker,
            initargs=(plan.handler, plan.worker_init, plan.handler_timeout),
            maxtasksperchild=plan.max_requests or None,
        )  # fmt: skip
        if self.pools:
            self.pools[-1].close()
        self.pools.append(pool)
        # A first task, so workers that cannot start end the server now rather than
        # at the first client.
        pool.apply_async(_probe, callback=self._ready, error_callback=self._not_ready)

    def _ready(self, pid: int) -> None:
        log(f"pool ready (worker {pid} answered)")

    def _not_ready(self, exc: BaseException) -> None:
        self.ended.put((-1, None, exc))
        os.write(self.done_w, b"\0")

    def _retire_idle_pools(self) -> None:
        busy = {id(entry.pool) for entry in self.open.values()}
        for pool in self.pools[:-1]:
            if id(pool) not in busy:
                pool.join()
                self.pools.remove(pool)

    def _stop(self, graceful: bool) -> None:
        if not graceful:
            log("stopping now")
            self.stop_deadline = time.monotonic()
            return
        log(f"stopping: finishing open connections (up to {self.plan.graceful_timeout:g} s)")
        self.stop_deadline = time.monotonic() + self.plan.graceful_timeout
        for entry in self.open.values():
            try:
                entry.conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        for pool in self.pools:
            pool.close()


def _end(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
