"""Queue throughput between a worker and the parent: ``procpool.Queue`` against a
``multiprocessing.Manager().Queue()`` (the stdlib's way to hand a queue to a pool
task) and, for reference, a ``multiprocessing.Queue`` (which only a child made with
``Process`` can inherit).

    python3 benchmarks/sharing/bench_queue.py [--items 20000] [--repeat 5]

Two directions: a task puts ``--items`` small items that the parent gets, and the
parent puts items that a task gets. Medians of ``--repeat`` runs; the fork start
method (procpool's Queue works the same under spawn and forkserver).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import procpool


def put_many(q: Any, n: int) -> None:
    for i in range(n):
        q.put((i, "item"))


def get_many(q: Any, n: int) -> None:
    for _ in range(n):
        q.get()


def _through_pool(q: Any, n: int, task: Callable[[Any, int], None], parent_puts: bool) -> float:
    with procpool.Pool(1, context="fork") as pool:
        pool.apply(sum, ([1],))  # the worker is up
        t0 = time.perf_counter()
        done = pool.apply_async(task, (q, n))
        if parent_puts:
            put_many(q, n)
        else:
            get_many(q, n)
        done.get()
        return time.perf_counter() - t0


def _through_process(q: Any, n: int, task: Callable[[Any, int], None], parent_puts: bool) -> float:
    process = multiprocessing.get_context("fork").Process(target=task, args=(q, n))
    t0 = time.perf_counter()
    process.start()
    if parent_puts:
        put_many(q, n)
    else:
        get_many(q, n)
    process.join()
    return time.perf_counter() - t0


def run(kind: str, n: int, parent_puts: bool) -> float:
    task = get_many if parent_puts else put_many
    if kind == "procpool.Queue":
        q = procpool.Queue()
        try:
            return n / _through_pool(q, n, task, parent_puts)
        finally:
            q.close()
    if kind == "Manager().Queue()":
        with multiprocessing.get_context("fork").Manager() as manager:
            return n / _through_pool(manager.Queue(), n, task, parent_puts)
    q = multiprocessing.get_context("fork").Queue()
    return n / _through_process(q, n, task, parent_puts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    kinds = ["procpool.Queue", "Manager().Queue()", "multiprocessing.Queue (inherited)"]
    for parent_puts, title in ((False, "a task puts, the parent gets"),
                               (True, "the parent puts, a task gets")):
        rates = {k: statistics.median(run(k, args.items, parent_puts) for _ in range(args.repeat))
                 for k in kinds}
        manager = rates["Manager().Queue()"]
        print(f"{title} ({args.items:,} items, median of {args.repeat}):")
        for kind, rate in rates.items():
            print(f"  {kind:36} {rate:>10,.0f} items/s {rate / manager:6.1f}x Manager")


if __name__ == "__main__":
    main()
