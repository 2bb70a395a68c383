"""procpool.dask beside the local pool and plain ``distributed.Client``.

``python3 benchmarks/dask/bench_dask.py [--repeat N] [--workers N]``

Rows (medians of ``--repeat``, each a fresh measurement on warm pools):
- map of 10,000 small items with default chunking: ``procpool.Pool.map``,
  ``procpool.dask.Pool.map`` (guided chunks), and ``Client.map`` + ``gather`` (a task
  per item, what a Dask user writes without procpool);
- apply latency (one blocking call, 200 in a row): ``procpool.Pool.apply``,
  ``procpool.dask.Pool.apply``, ``Client.submit(...).result()``.
The Dask runs use one LocalCluster of ``--workers`` one-thread worker processes on
127.0.0.1, shared by the procpool.dask pool and the plain client.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import distributed

import procpool
import procpool.dask

ITEMS = 10_000
CALLS = 200


def work(x: int) -> int:
    return x * x


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rows(client: distributed.Client, workers: int, repeat: int) -> list[tuple[str, str, float]]:
    items = list(range(ITEMS))
    out = []
    with procpool.Pool(workers) as local, procpool.dask.Pool(workers, client=client) as dpool:
        local.map(work, items)
        dpool.map(work, items)  # warm: functions unpickled, workers connected
        out.append(("map 10,000", "procpool.Pool", timed(lambda: local.map(work, items), repeat)))
        out.append(("map 10,000", "procpool.dask.Pool",
                    timed(lambda: dpool.map(work, items), repeat)))
        out.append(("map 10,000", "Client.map + gather", timed(
            lambda: client.gather(client.map(work, items, pure=False)), repeat)))

        def loop(call: Callable[[int], object]) -> Callable[[], None]:
            return lambda: [call(i) for i in range(CALLS)] and None

        out.append(("apply latency", "procpool.Pool",
                    timed(loop(lambda i: local.apply(work, (i,))), repeat) / CALLS))
        out.append(("apply latency", "procpool.dask.Pool",
                    timed(loop(lambda i: dpool.apply(work, (i,))), repeat) / CALLS))
        out.append(("apply latency", "Client.submit().result()", timed(
            loop(lambda i: client.submit(work, i, pure=False).result()), repeat) / CALLS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        results = rows(client, args.workers, args.repeat)
    base = {scenario: t for scenario, who, t in results if who == "procpool.Pool"}
    print(f"{'scenario':<15} {'runner':<26} {'median':>11} {'vs procpool.Pool':>17}")
    for scenario, who, t in results:
        shown = f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.3f} s"
        print(f"{scenario:<15} {who:<26} {shown:>11} {t / base[scenario]:>16.1f}x")


if __name__ == "__main__":
    main()
