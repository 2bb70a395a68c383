"""Helpers shared by the tests: waiting for processes, draining iterators."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

#: The tests' root folder: the helper modules (fault_funcs, cli_funcs, ...) are here,
#: and a subprocess that imports them needs it on its path.
TESTS = Path(__file__).resolve().parent

#: Deadlock detector for ``get``/``wait``/``result``: far longer than any task here takes.
GET = 10.0
#: A timeout that must run out: the task waited for is blocked on an event.
SHORT = 0.05


def still_alive_after(pids: Iterable[int], timeout: float) -> list[int]:
    """The pids that have not exited within ``timeout`` seconds in all.

    Waits on a pidfd per process (an event, not a polling loop); works for processes
    that are not our children, such as a killed program's workers.
    """
    deadline = time.monotonic() + timeout
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


def drain(it: Iterator[Any]) -> list[Any]:
    """Iterate to the end, recording each exception (as its type) in its place."""
    out: list[Any] = []
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out
        except Exception as exc:
            out.append(type(exc))


def calls_racing_with_kills(
    square: Callable[[int], int], kill: Callable[[], object], lost: type[BaseException]
) -> list[object]:
    """Four threads making 30 blocking calls each at once, every tenth of them killing
    its worker: what each call ended with (True: the right square; "lost": ``lost``
    raised; "no error": a kill that returned). Fails if a thread hangs."""
    outcomes: list[object] = []
    lock = threading.Lock()

    def caller(k: int) -> None:
        for i in range(30):
            try:
                if i % 10 == 7:
                    kill()
                    got: object = "no error"
                else:
                    got = square(k * 100 + i) == (k * 100 + i) ** 2
            except lost:
                got = "lost"
            with lock:
                outcomes.append(got)

    in_threads(caller, 4)
    return outcomes


def in_threads(target: Callable[[int], object], count: int) -> None:
    """Run ``target(0)`` ... ``target(count - 1)`` in threads at once and wait for them
    all; fails if one has not returned within ``GET`` seconds."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GET)
    assert not any(thread.is_alive() for thread in threads), "a call never returned"
