"""``procpool.dask``: the same ``Pool`` and ``Executor`` on a Dask cluster.

Moving a program from one machine to a cluster is changing its import::

    from procpool.dask import Pool            # was: from procpool import Pool

    with Pool(address="tcp://scheduler:8786") as pool:
        print(pool.map(work, range(10_000)))

With neither ``address`` nor ``client`` the pool starts (and at the end closes) a
``distributed.LocalCluster`` of ``processes`` one-thread worker processes bound to
127.0.0.1 (``cluster_kwargs`` override its settings); ``address`` connects to a running
scheduler; ``client`` uses your ``distributed.Client`` (left open). The classes are
procpool's own facades on a Dask backend (``procpool._dask``): the same methods,
results and errors. What Dask cannot do is refused, not faked: ``maxtasksperchild``,
``max_memory_per_child`` (use the workers' ``memory_limit``), a start method,
``share`` and ``imap_stream``. ``task_timeout`` and cancelling a running call settle
the call at once; the call itself is stopped only on the pool's own cluster of
processes (its worker is restarted). See docs/dask.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

try:
    import distributed  # noqa: F401
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "procpool.dask needs Dask distributed: pip install 'procpool[dask]'"
    ) from _missing

from procpool._api.executor import Executor as _Executor
from procpool._api.pool import Pool as _Pool
from procpool._core.backend import Backend
from procpool._dask.backend import DaskBackend
from procpool._dask.cluster import Connection, Target
from procpool._engine.workers import WorkerSpec

__all__ = ["Executor", "Pool"]


def _refuse(what: str, value: object, advice: str) -> None:
    if value is not None:
        raise ValueError(f"procpool.dask does not support {what}: {advice}")


def _backend(target: Target, workers: int, explicit: bool, spec: WorkerSpec) -> Backend:
    """A Dask backend for ``spec``: ``workers`` sizes an own cluster, and, when the
    user gave it, the calls' chunking (else: the cluster's thread count)."""
    connection = Connection(target, workers)
    try:
        return DaskBackend(
            connection, workers if explicit else None, spec.initializer, spec.initargs
        )
    except BaseException:
        connection.close()
        raise


class Pool(_Pool):
    """``procpool.Pool`` (the ``multiprocessing.Pool`` API) on Dask distributed.

    ``processes``: the workers of the pool's own LocalCluster (default: the CPU
    count), or, on a shared cluster, how many calls maps size their chunks for
    (default: the cluster's threads). ``initializer(*initargs)`` runs once on every
    Dask worker, those that join later included.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        address: str | None = None,
        client: Any = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
    ) -> None:
        _refuse("maxtasksperchild", maxtasksperchild, "Dask does not replace workers "
                "after a number of tasks")  # fmt: skip
        _refuse("a start method (context)", context,
                "Dask starts its workers itself; see cluster_kwargs")  # fmt: skip
        self._target = Target(address, client, cluster_kwargs)
        self._explicit = processes is not None
        super().__init__(
            processes, initializer, initargs, task_timeout=task_timeout, retries=retries
        )
        self._processes = self._engine.processes

    def _make_backend(self, spec: WorkerSpec) -> Backend:
        return _backend(self._target, spec.processes, self._explicit, spec)

    def __repr__(self) -> str:
        return (f"<procpool.dask.Pool state={self._engine.state.value} "
                f"processes={self._processes}>")  # fmt: skip

    def share(self, obj: Any) -> NoReturn:
        """Not on Dask: a shared object lives in this machine's memory. Pass the object
        itself, or ``client.scatter`` it and pass the future."""
        raise NotImplementedError("pool.share needs workers on this machine; on Dask pass "
                                  "the object itself, or client.scatter() it")  # fmt: skip

    def imap_stream(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not on Dask: a Dask task returns once, it cannot send values as it goes."""
        raise NotImplementedError("imap_stream is not supported on Dask (a Dask task "
                                  "returns once)")  # fmt: skip


class Executor(_Executor):
    """``procpool.Executor`` (the ``concurrent.futures`` API) on Dask distributed.

    ``max_workers`` is as ``Pool``'s ``processes``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        address: str | None = None,
        client: Any = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
    ) -> None:
        _refuse("max_tasks_per_child", max_tasks_per_child, "Dask does not replace "
                "workers after a number of tasks")  # fmt: skip
        _refuse("mp_context", mp_context, "Dask starts its workers itself; see cluster_kwargs")
        self._target = Target(address, client, cluster_kwargs)
        self._explicit = max_workers is not None
        super().__init__(
            max_workers, None, initializer, initargs, task_timeout=task_timeout,
            retries=retries,
        )
        self._max_workers = self._engine.processes
        self._on_demand = False  # the cluster is as big as it is

    def _make_backend(self, spec: WorkerSpec) -> Backend:
        return _backend(self._target, self._max_workers, self._explicit, spec)

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else self._engine.state.value
        return f"<procpool.dask.Executor state={state} max_workers={self._max_workers}>"

    def share(self, obj: Any) -> NoReturn:
        """Not on Dask (see Pool.share)."""
        raise NotImplementedError("executor.share needs workers on this machine; on Dask "
                                  "pass the object itself, or client.scatter() it")  # fmt: skip
