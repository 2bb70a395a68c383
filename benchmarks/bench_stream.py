"""``pool.imap_stream`` throughput: values of long streams, and many one-value tasks.

    python3 benchmarks/bench_stream.py [--repeat 5]

Prints medians of --repeat runs on a Pool(2): values/s for 2 tasks that yield 100,000
values each, and tasks/s for 5,000 tasks that yield one value each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import procpool


def many(n: int) -> Iterator[int]:
    yield from range(n)


def one(n: int) -> Iterator[int]:
    yield n


def rate(pool: procpool.Pool, func: Callable[[int], Iterator[int]], items: list[int]) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in pool.imap_stream(func, items))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    with procpool.Pool(2) as pool:
        list(pool.imap_stream(many, [1000]))  # warm
        values = [rate(pool, many, [100_000, 100_000]) for _ in range(repeat)]
        tasks = [rate(pool, one, list(range(5000))) for _ in range(repeat)]
    print(f"2 tasks x 100,000 values: {statistics.median(values):,.0f} values/s")
    print(f"5,000 one-value tasks:    {statistics.median(tasks):,.0f} tasks/s")


if __name__ == "__main__":
    main()
