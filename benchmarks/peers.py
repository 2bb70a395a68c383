"""One small adapter per pool library, all with the same six operations.

``start(workers)``, ``apply(fn, args)`` (one blocking round trip), ``submit_many(fn,
argslist)`` (submit everything, then wait for every result), ``map(fn, items)`` (the
library's own map, default chunking), ``imap_unordered(fn, items)`` (results as they
complete, one item per task) and ``shutdown()``. Where a library has no such operation
the adapter uses its closest idiomatic equivalent and says so in ``notes`` (printed as a
footnote under the table).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

WORKERS = 2

Fn = Callable[..., Any]


def stdlib_chunksize(n: int, workers: int) -> int:
    """``multiprocessing.Pool.map``'s default chunksize for ``n`` items."""
    size, extra = divmod(n, workers * 4)
    return max(1, size + (1 if extra else 0))


class Peer:
    """The operations every scenario uses; subclasses fill them in."""

    name = ""
    label = ""
    notes: dict[str, str] = {}
    modules: tuple[str, ...] = ()  # imported before any timing

    def start(self, workers: int = WORKERS) -> None:
        raise NotImplementedError

    def apply(self, fn: Fn, args: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    def submit_many(self, fn: Fn, argslist: Sequence[tuple[Any, ...]]) -> list[Any]:
        raise NotImplementedError

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def imap_unordered(self, fn: Fn, items: Sequence[Any]) -> Iterable[Any]:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError


class MultiprocessingPool(Peer):
    name = "mp"
    label = "multiprocessing.Pool"

    def _pool_class(self) -> Any:
        return multiprocessing.Pool

    def start(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self.pool = self._pool_class()(workers)

    def apply(self, fn: Fn, args: tuple[Any, ...] = ()) -> Any:
        return self.pool.apply(fn, args)

    def submit_many(self, fn: Fn, argslist: Sequence[tuple[Any, ...]]) -> list[Any]:
        handles = [self.pool.apply_async(fn, args) for args in argslist]
        return [h.get() for h in handles]

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def imap_unordered(self, fn: Fn, items: Sequence[Any]) -> Iterable[Any]:
        return self.pool.imap_unordered(fn, items, chunksize=1)

    def shutdown(self) -> None:
        self.pool.terminate()
        self.pool.join()


class ProcpoolPool(MultiprocessingPool):
    name = "procpool"
    label = "procpool.Pool"
    modules = ("procpool",)

    def _pool_class(self) -> Any:
        import procpool

        return procpool.Pool


class _FuturesPeer(Peer):
    """Anything with ``submit`` returning concurrent.futures-style futures."""

    def _executor(self, workers: int) -> Any:
        raise NotImplementedError

    def start(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self.ex = self._executor(workers)

    def _submit(self, fn: Fn, args: tuple[Any, ...]) -> Any:
        return self.ex.submit(fn, *args)

    def apply(self, fn: Fn, args: tuple[Any, ...] = ()) -> Any:
        return self._submit(fn, args).result()

    def submit_many(self, fn: Fn, argslist: Sequence[tuple[Any, ...]]) -> list[Any]:
        futures = [self._submit(fn, args) for args in argslist]
        return [f.result() for f in futures]

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        # Their default chunksize is 1: a task per item, hours for a million items.
        return list(self.ex.map(fn, items, chunksize=stdlib_chunksize(len(items), self.workers)))

    def imap_unordered(self, fn: Fn, items: Sequence[Any]) -> Iterator[Any]:
        futures = [self._submit(fn, (item,)) for item in items]
        return (f.result() for f in concurrent.futures.as_completed(futures))

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


_FUTURES_NOTES = {
    "map": "`map(chunksize=…)` given multiprocessing.Pool's default chunksize (theirs is 1: one future per item)",
    "imap_unordered": "no imap_unordered: `submit` per item, then `as_completed`",
}


class ProcessPoolExecutorPeer(_FuturesPeer):
    name = "cf"
    label = "ProcessPoolExecutor"
    notes = {"apply": "`submit(f).result()`", **_FUTURES_NOTES}

    def _executor(self, workers: int) -> Any:
        return concurrent.futures.ProcessPoolExecutor(workers)


class ProcpoolExecutor(_FuturesPeer):
    name = "procpool-ex"
    label = "procpool.Executor"
    modules = ("procpool",)
    notes = ProcessPoolExecutorPeer.notes

    def _executor(self, workers: int) -> Any:
        import procpool

        return procpool.Executor(workers)


class LokyPeer(_FuturesPeer):
    name = "loky"
    label = "loky"
    modules = ("loky",)
    notes = {
        "apply": "`get_reusable_executor().submit(f).result()`",
        "start": "loky's own start method (a fresh interpreter per worker; it has no fork)",
        **_FUTURES_NOTES,
    }

    def _executor(self, workers: int) -> Any:
        import loky

        return loky.get_reusable_executor(max_workers=workers, timeout=600)

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True, kill_workers=True)


class PebblePeer(_FuturesPeer):
    name = "pebble"
    label = "pebble"
    modules = ("pebble",)
    notes = {
        "apply": "`schedule(f).result()`",
        "map": _FUTURES_NOTES["map"],
        "imap_unordered": "no imap_unordered: `schedule` per item, then `as_completed`",
    }

    def _executor(self, workers: int) -> Any:
        import pebble

        return pebble.ProcessPool(max_workers=workers)

    def _submit(self, fn: Fn, args: tuple[Any, ...]) -> Any:
        return self.ex.schedule(fn, args=args)

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        future = self.ex.map(fn, items, chunksize=stdlib_chunksize(len(items), self.workers))
        return list(future.result())

    def shutdown(self) -> None:
        self.ex.stop()
        self.ex.join()


class MpirePeer(Peer):
    name = "mpire"
    label = "mpire"
    modules = ("mpire",)
    notes = {"start": "workers start lazily, on the first task"}

    def start(self, workers: int = WORKERS) -> None:
        from mpire import WorkerPool

        # keep_alive: otherwise every map starts and stops the workers.
        self.pool = WorkerPool(n_jobs=workers, keep_alive=True)

    def apply(self, fn: Fn, args: tuple[Any, ...] = ()) -> Any:
        return self.pool.apply(fn, args)

    def submit_many(self, fn: Fn, argslist: Sequence[tuple[Any, ...]]) -> list[Any]:
        handles = [self.pool.apply_async(fn, args) for args in argslist]
        return [h.get() for h in handles]

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        return self.pool.map(fn, items)

    def imap_unordered(self, fn: Fn, items: Sequence[Any]) -> Iterable[Any]:
        return self.pool.imap_unordered(fn, items, chunk_size=1)

    def shutdown(self) -> None:
        self.pool.terminate()


class JoblibPeer(Peer):
    name = "joblib"
    label = "joblib"
    modules = ("joblib", "joblib.externals.loky")
    notes = {
        "apply": "a one-call `Parallel` batch inside `with Parallel(...)` (no single-call API)",
        "throughput": "one `Parallel(batch_size=1)` call over all tasks: one dispatch per task. "
                      "joblib's default auto-batching sends tasks in chunks, which is map's job (see the map row)",
        "cpu": "one `Parallel(batch_size=1)` call over all tasks",
        "map": "`Parallel()(delayed(f)(x) for x in items)`, `batch_size='auto'`",
        "imap_unordered": "`Parallel(return_as='generator_unordered', batch_size=1)`",
        "numpy": "arrays over 1 MB go in as a memmap (joblib's default `max_nbytes`)",
        "start": "loky backend: a fresh interpreter per worker",
    }

    def start(self, workers: int = WORKERS) -> None:
        from joblib import Parallel

        self.workers = workers
        self.parallel = Parallel(n_jobs=workers, backend="loky")
        self.parallel.__enter__()

    def apply(self, fn: Fn, args: tuple[Any, ...] = ()) -> Any:
        from joblib import delayed

        return self.parallel([delayed(fn)(*args)])[0]

    def submit_many(self, fn: Fn, argslist: Sequence[tuple[Any, ...]]) -> list[Any]:
        from joblib import Parallel, delayed

        # One dispatch per task, like apply_async; auto-batching is chunking (see map).
        per_task = Parallel(n_jobs=self.workers, backend="loky", batch_size=1)
        return per_task(delayed(fn)(*args) for args in argslist)

    def map(self, fn: Fn, items: Sequence[Any]) -> list[Any]:
        from joblib import delayed

        return self.parallel(delayed(fn)(x) for x in items)

    def imap_unordered(self, fn: Fn, items: Sequence[Any]) -> Iterable[Any]:
        from joblib import Parallel, delayed

        gen = Parallel(
            n_jobs=self.workers, backend="loky", return_as="generator_unordered", batch_size=1
        )
        return gen(delayed(fn)(x) for x in items)

    def shutdown(self) -> None:
        from joblib.externals.loky import reusable_executor

        self.parallel.__exit__(None, None, None)
        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)


def _available() -> dict[str, type[Peer]]:
    peers: list[type[Peer]] = [
        MultiprocessingPool,
        ProcessPoolExecutorPeer,
        ProcpoolPool,
    ]
    import procpool

    if hasattr(procpool, "Executor"):
        peers.append(ProcpoolExecutor)
    peers += [LokyPeer, PebblePeer, MpirePeer, JoblibPeer]
    return {p.name: p for p in peers}


PEERS = _available()
