"""The tutorial's pattern: apply_async with a callback, close, join.

Run it with ``python -m procpool.examples.tutorial``.
"""

from __future__ import annotations

import os
import time

from procpool import Pool


def task(n: int) -> int:
    time.sleep(0.05)  # stands for real work
    return n * n


def main() -> None:
    results: list[int] = []
    with Pool(4) as pool:
        for i in range(10):
            pool.apply_async(task, args=(i,), callback=results.append)
        pool.close()
        pool.join()
    print(f"[{os.getpid()}] squares, in completion order: {results}")
    print(f"sorted: {sorted(results)}")


if __name__ == "__main__":
    main()
