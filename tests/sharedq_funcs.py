"""Task functions for tests/api/test_shared_queue.py."""

from __future__ import annotations

import os
import queue
import signal
from typing import Any


def report_progress(q: Any, n: int) -> int:
    for i in range(n):
        q.put(("progress", i))
    return n


def take_and_square(work: Any, results: Any, k: int) -> None:
    for _ in range(k):
        item = work.get(timeout=30)
        results.put(item * item)


def produce(q: Any, n: int) -> None:
    for i in range(n):
        q.put(i)
    q.put(None)


def consume(q: Any) -> list[int]:
    got = []
    while (item := q.get(timeout=30)) is not None:
        got.append(item)
    return got


def put_logging(q: Any, log: Any, n: int) -> None:
    """Put n items into a bounded queue, saying after each put returned."""
    for i in range(n):
        q.put(i)
        log.put(i)


def try_empty_and_full(empty: Any, full: Any) -> tuple[str, str]:
    try:
        empty.get(timeout=0.05)
        got = "item"
    except queue.Empty:
        got = "empty"
    try:
        full.put_nowait("more")
        put = "put"
    except queue.Full:
        put = "full"
    return got, put


def put_then_die(q: Any, n: int) -> None:
    for i in range(n):
        q.put(i)
    os.kill(os.getpid(), signal.SIGKILL)


def block_in_get(q: Any, log: Any) -> Any:
    log.put(os.getpid())
    return q.get()


def use_closed(q: Any) -> str:
    try:
        q.get(timeout=1)
    except (ValueError, OSError) as exc:
        return str(exc)
    return "no error"


def put_in_process(q: Any) -> None:
    q.put("from a Process")


def take_some_then_die(q: Any, log: Any, k: int) -> None:
    """Get k items in a fast loop (the client then takes them several at a time),
    log each, and die with the rest of a batch still unreturned."""
    for _ in range(k):
        log.put(q.get(timeout=30))
    os.kill(os.getpid(), signal.SIGKILL)
