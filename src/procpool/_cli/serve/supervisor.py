"""The prefork supervisor: starts workers, replaces the dead, obeys signals.

One thread, one wait: a selector on the signal wakeup pipe (SIGTERM, SIGINT, SIGHUP,
SIGTTIN, SIGTTOU, SIGCHLD) and each worker's status pipe (``R`` ready, ``X`` retiring,
EOF when it exits), with a timeout for the nearest deadline: a respawn after backoff,
a graceful stop that ran out, the next look at the board for a stuck handler. Each
pass of the loop: handle what woke it, reap, enforce deadlines, then bring the
workers to what is wanted (``_maintain``).

Generations make SIGHUP a rolling restart: it bumps the generation; one new worker is
started at a time, and an old one is told to stop only when a new one is ready, so
the number ready to accept never drops and no connection is refused (the listening
socket itself never closes). SIGTTIN and SIGTTOU move the wanted number by one.

A worker that dies before it is ready, or fails by itself within a second of it (a
``kill -9`` from outside does not count once it is ready), counts toward a crash
loop: the next start waits 0.1 s, doubling to 5 s, and five in a row end the server
with exit status 1 and the last worker's reason.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from procpool._cli.serve.board import MAX_WORKERS, Board
from procpool._cli.serve.worker import (
    INIT_FAILED,
    READY,
    RETIRING,
    WorkerSetup,
    flush_std,
    log,
    wake_only,
    worker_main,
)

MAX_CRASHES = 5
SHORT_LIFE = 1.0
_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGCHLD,
)  # fmt: skip


@dataclass(slots=True)
class Child:
    pid: int
    index: int
    generation: int
    status: int  # read end of its status pipe
    started: float
    ready_at: float = 0.0
    stopping: bool = False
    kill_at: float = 0.0
    why: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    workers: int
    max_connections: int | None
    max_requests: int
    max_requests_jitter: int


class Supervisor:
    def __init__(self, setup: WorkerSetup, plan: Plan) -> None:
        self.setup = setup
        self.plan = plan
        self.wanted = plan.workers
        self.board = Board(setup.threads + 1)
        self.children: dict[int, Child] = {}
        self.generation = 0
        self.crashes = 0
        self.last_crash = ""
        self.next_start = 0.0
        self.stop_deadline = 0.0  # set once stopping
        self.failed = ""
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._set_limit()

    # -- the loop

    def run(self) -> int:
        """Serve until a signal stops it; the exit status."""
        previous = self._install_signals()
        try:
            while not (self.stop_deadline and not self.children):
                self._maintain()
                for key, _ in self.selector.select(self._timeout()):
                    key.data()
                self._reap()
                self._enforce_deadlines()
        finally:
            self._kill_all()
            self._restore_signals(previous)
        if self.failed:
            log(f"error: {self.failed}")
            return 1
        return 0

    def _install_signals(self) -> dict[int, object]:
        previous: dict[int, object] = {sig: signal.signal(sig, wake_only) for sig in _SIGNALS}
        previous[-1] = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._on_signals)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))  # type: ignore[arg-type]
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [c.kill_at for c in self.children.values() if c.kill_at]
        if self.stop_deadline:
            deadlines.append(self.stop_deadline)
        elif self._serving() < self.wanted:
            deadlines.append(self.next_start)
        if self.setup.handler_timeout and self.children:
            deadlines.append(now + min(1.0, max(0.05, self.setup.handler_timeout / 4)))
        return max(0.0, min(deadlines) - now) if deadlines else None

    # -- what woke it

    def _on_signals(self) -> None:
        try:
            received = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        for sig in received:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(graceful=not self.stop_deadline)
            elif sig == signal.SIGHUP and not self.stop_deadline:
                self.generation += 1
                log(f"SIGHUP: replacing {self._serving()} workers one by one")
            elif sig == signal.SIGTTIN:
                self.wanted = min(MAX_WORKERS, self.wanted + 1)
                log(f"SIGTTIN: {self.wanted} workers")
            elif sig == signal.SIGTTOU:
                self.wanted = max(1, self.wanted - 1)
                log(f"SIGTTOU: {self.wanted} workers")

    def _on_status(self, child: Child) -> Callable[[], None]:
        def read() -> None:
            data = os.read(child.status, 64)
            if not data:
                self.selector.unregister(child.status)
                os.close(child.status)
                child.status = -1
            if READY in data:
                child.ready_at = time.monotonic()
                log(f"worker {child.pid} ready")
            if RETIRING in data and not child.stopping:
                self._retire(child, "served --max-requests", signal_it=False)

        return read

    def _stop(self, graceful: bool) -> None:
        if graceful:
            log(f"stopping: finishing open connections (up to {self.setup.graceful_timeout:g} s)")
            self.stop_deadline = time.monotonic() + self.setup.graceful_timeout
            for child in self.children.values():
                self._retire(child, "server stopping")
        else:
            log("stopping now")
            self.stop_deadline = time.monotonic()
            self._kill_all(wait=False)

    # -- reaping and deadlines

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._ended(child, status)

    def _ended(self, child: Child, status: int) -> None:
        self.board.clear_worker(child.index)
        if child.status >= 0:
            self.selector.unregister(child.status)
            os.close(child.status)
        how = _exit_text(status)
        if child.stopping:
            if child.why != "server stopping":
                log(f"worker {child.pid} {how} ({child.why})")
            return
        now = time.monotonic()
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        short = not child.ready_at or (now - child.ready_at < SHORT_LIFE and not killed)
        self.crashes = self.crashes + 1 if short else 0
        init = " (its --worker-init raised)" if os.WEXITSTATUS(status) == INIT_FAILED else ""
        self.last_crash = f"worker {child.pid} {how}{init}"
        log(f"worker {child.pid} {how}{init}; starting another")
        if self.crashes >= MAX_CRASHES:
            self.failed = f"workers keep dying ({self.crashes} in a row); last: {self.last_crash}"
            self._stop(graceful=False)
        else:
            self.next_start = now + (min(5.0, 0.1 * 2 ** (self.crashes - 1)) if short else 0.0)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        if self.stop_deadline and now >= self.stop_deadline:
            self._kill_all(wait=False)
        for child in list(self.children.values()):
            if child.kill_at and now >= child.kill_at:
                os.kill(child.pid, signal.SIGKILL)
                child.kill_at = 0.0
            stuck = self.setup.handler_timeout and self.board.stuck_since(child.index)
            if stuck and now - stuck > self.setup.handler_timeout:  # type: ignore[operator]
                log(f"worker {child.pid}: a handler ran past --handler-timeout; killing it")
                child.stopping, child.why = True, "killed: handler timeout"
                os.kill(child.pid, signal.SIGKILL)

    def _kill_all(self, wait: bool = True) -> None:
        for child in self.children.values():
            child.stopping = True
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while wait and self.children:
            pid, status = os.waitpid(-1, 0)
            gone = self.children.pop(pid, None)
            if gone is not None:
                self._ended(gone, status)

    # -- bringing the workers to what is wanted

    def _serving(self) -> int:
        return sum(1 for c in self.children.values() if not c.stopping)

    def _maintain(self) -> None:
        if self.stop_deadline:
            return
        serving = [c for c in self.children.values() if not c.stopping]
        old = [c for c in serving if c.generation < self.generation]
        new = [c for c in serving if c.generation == self.generation]
        pending = sum(1 for c in new if not c.ready_at)
        while old and (len(new) - pending) + len(old) > self.wanted:
            self._retire(old.pop(0), "replaced (SIGHUP)")
        for extra in new[self.wanted :]:
            self._retire(extra, "fewer workers wanted (SIGTTOU)")
        missing = self.wanted - len(new)
        if old and pending:
            missing = 0  # a rolling restart starts one at a time
        self._set_limit(len(serving) + max(0, missing))  # before a new worker accepts
        if missing > 0 and time.monotonic() >= self.next_start:
            for _ in range(1 if old else missing):
                self._start()
        self._set_limit()

    def _set_limit(self, workers: int | None = None) -> None:
        if self.plan.max_connections is None:
            self.board.set_limit(self.board.slots)  # never passed
            return
        if workers is None:
            workers = self._serving()
        serving = min(workers, self.wanted) * self.setup.threads
        self.board.set_limit(min(serving, self.plan.max_connections))

    def _retire(self, child: Child, why: str, signal_it: bool = True) -> None:
        child.stopping, child.why = True, why
        child.kill_at = time.monotonic() + self.setup.graceful_timeout
        if signal_it:
            os.kill(child.pid, signal.SIGTERM)

    def _start(self) -> None:
        used = {c.index for c in self.children.values()}
        index = next(i for i in range(MAX_WORKERS) if i not in used)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        jitter = random.randint(0, self.plan.max_requests_jitter)
        max_requests = self.plan.max_requests + jitter if self.plan.max_requests else 0
        flush_std()
        pid = os.fork()
        if pid == 0:
            for fd in (self.wake_r, self.wake_w, status_r, *self._status_fds()):
                os.close(fd)
            worker_main(self.setup, self.board, index, status_w, max_requests)
        os.close(status_w)
        child = Child(pid, index, self.generation, status_r, time.monotonic())
        self.children[pid] = child
        self.selector.register(status_r, selectors.EVENT_READ, self._on_status(child))

    def _status_fds(self) -> list[int]:
        return [c.status for c in self.children.values() if c.status >= 0]


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"was killed by {signal.Signals(sig).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"
