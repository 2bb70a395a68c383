"""A big read-only array read by many tasks: ``pool.share`` against passing it.

    python3 benchmarks/sharing/bench_share.py [--mb 200] [--tasks 1000] [--copy-tasks 20]

Each task reads one element of a float64 array of ``--mb`` MB. Rows:

- procpool ``pool.share(arr)``, ``--tasks`` tasks: the array goes into shared memory
  once, and each worker maps it once;
- ``multiprocessing.Pool`` with the array as an argument: it is pickled, sent and
  unpickled for every task;
- procpool with the array as an argument: large buffers go through a memfd, but still
  once per task;
- joblib ``Parallel`` (loky, automatic memmapping of arrays over 1 MB), when it is
  installed.

The per-task rows run ``--copy-tasks`` tasks (a thousand copies of 200 MB would take
minutes) and are scaled to ``--tasks``: their cost per task is constant, which the
printed per-task time shows. Memory is the peak of the parent's and the workers'
proportional set size outside shared memory, plus the machine's shared memory
(``Shmem`` in /proc/meminfo: a memfd counts whether mapped or not, once), sampled every
20 ms, above what was in use before the pool started (the array itself is not counted). Each row is the
median of ``--repeat`` runs. Two workers, the fork start method.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import procpool

WORKERS = 2


def peek(arr: Any, i: int) -> float:
    return float(arr[(i * 7919) % len(arr)])


def _private_kb(pid: int) -> int:
    """A process's proportional set size without its shared memory (Pss_Anon and
    Pss_File): shared memory is counted once, system-wide (see _shmem_kb)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss_Anon:", "Pss_File:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def _shmem_kb() -> int:
    """Shared memory in use on the machine (memfds, /dev/shm): mapped or not."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1])
    return 0


def _used_kb() -> int:
    return sum(_private_kb(pid) for pid in _family()) + _shmem_kb()


def _family() -> list[int]:
    """This process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class PeakMemory:
    """The peak memory of this process and its children while the block runs: their
    PSS outside shared memory, plus the machine's shared memory (MB above the start)."""

    def __enter__(self) -> PeakMemory:
        self.base = _used_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _used_kb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def above_mb(self) -> float:
        return (self.peak - self.base) / 1024


def run_share(arr: np.ndarray, tasks: int) -> float:
    with procpool.Pool(WORKERS, context="fork") as pool:
        pool.apply(peek, (np.zeros(1), 0))  # workers up
        t0 = time.perf_counter()
        handle = pool.share(arr)
        results = [pool.apply_async(peek, (handle, i)) for i in range(tasks)]
        for r in results:
            r.get()
        return time.perf_counter() - t0


def _run_as_argument(make_pool: Callable[[], Any], arr: np.ndarray, tasks: int) -> float:
    with make_pool() as pool:
        pool.apply(peek, (np.zeros(1), 0))  # workers up
        t0 = time.perf_counter()
        results = [pool.apply_async(peek, (arr, i)) for i in range(tasks)]
        for r in results:
            r.get()
        return time.perf_counter() - t0


def run_procpool_arg(arr: np.ndarray, tasks: int) -> float:
    return _run_as_argument(lambda: procpool.Pool(WORKERS, context="fork"), arr, tasks)


def run_mp_arg(arr: np.ndarray, tasks: int) -> float:
    return _run_as_argument(lambda: multiprocessing.get_context("fork").Pool(WORKERS), arr, tasks)


def run_joblib(arr: np.ndarray, tasks: int) -> float:
    from joblib import Parallel, delayed

    with Parallel(n_jobs=WORKERS, max_nbytes="1M") as parallel:
        parallel(delayed(peek)(np.zeros(1), 0) for _ in range(WORKERS))  # workers up
        t0 = time.perf_counter()
        parallel(delayed(peek)(arr, i) for i in range(tasks))
        return time.perf_counter() - t0


def measure(
    run: Callable[[np.ndarray, int], float], arr: np.ndarray, tasks: int, repeat: int
) -> tuple[float, float]:
    times, peaks = [], []
    for _ in range(repeat):
        with PeakMemory() as memory:
            times.append(run(arr, tasks))
        peaks.append(memory.above_mb)
    return statistics.median(times), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--copy-tasks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    arr = np.random.default_rng(0).random(args.mb * (1 << 20) // 8)
    rows: list[tuple[str, int, float, float]] = []
    plan: list[tuple[str, Callable[[np.ndarray, int], float], int]] = [
        ("procpool pool.share", run_share, args.tasks),
        ("multiprocessing.Pool, array as argument", run_mp_arg, args.copy_tasks),
        ("procpool, array as argument", run_procpool_arg, args.copy_tasks),
    ]
    try:
        import joblib  # noqa: F401

        plan.append(("joblib Parallel (memmapping)", run_joblib, args.tasks))
    except ImportError:
        print("joblib is not installed: its row is skipped")
    for name, run, tasks in plan:
        seconds, peak = measure(run, arr, tasks, args.repeat)
        rows.append((name, tasks, seconds, peak))
        print(f"  {name}: {tasks} tasks in {seconds:.3f} s, peak +{peak:,.0f} MB", flush=True)
    print(f"\n{args.tasks} tasks reading a {args.mb} MB array, {WORKERS} workers, "
          f"median of {args.repeat}:")
    print(f"{'':42} {'per task':>10} {'all tasks':>11} {'vs share':>9} {'peak memory':>12}")
    share_total = rows[0][2] / rows[0][1] * args.tasks
    for name, tasks, seconds, peak in rows:
        per_task = seconds / tasks
        total = per_task * args.tasks
        scaled = "" if tasks == args.tasks else f" (from {tasks})"
        print(f"{name:42} {per_task * 1e3:8.3f} ms {total:9.2f} s {total / share_total:8.1f}x "
              f"{peak:+9,.0f} MB{scaled}")


if __name__ == "__main__":
    main()
