"""Fixtures for the Dask backend's tests: one LocalCluster per test module, bound to
loopback, and a leak check that knows which threads and processes are the cluster's.

The root conftest's ``no_leaks`` snapshots before each test and wants nothing new
after it; a module's cluster outlives its tests and Dask starts threads lazily (its
workers' thread pools on the first task), and replaces a killed worker process. So
here, per test, nothing of procpool's may be left (its threads are named
``procpool-*``) and no child process but the cluster's current workers; and when the
module's cluster has closed, nothing at all may be left since before it started, but
the two executors Dask keeps for the life of the process (``Dask-Offload``, and
``Dask-Callback-Thread`` of ``Future.add_done_callback``: module-level singletons in
distributed, never shut down).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

# The root conftest, by path: "conftest" in sys.modules may be this module (the
# api test modules imported here do ``from conftest import child_pids``, so it is
# re-exported).
_spec = importlib.util.spec_from_file_location(
    "_procpool_base_conftest", Path(__file__).parent.parent / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_base: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
child_pids = _base.child_pids
leak_problems = _base.leak_problems
shm_segments = _base.shm_segments
START_METHODS = _base.START_METHODS

# Threads distributed starts once per process and never stops (see above).
_DASK_SINGLETONS = ("Dask-Offload", "Dask-Callback-Thread")

_clients: list[Any] = []  # the module's cluster client, while it runs


def _cluster_pids() -> set[int]:
    pids: set[int] = set()
    for client in _clients:
        if client.cluster is not None and client.cluster.processes:
            pids.update(client.run(os.getpid).values())
    return pids


def _start(processes: bool, config: dict[str, Any] | None = None) -> Iterator[Any]:
    import dask

    children = child_pids()
    threads = set(threading.enumerate())
    shm = shm_segments()
    settings: dict[str, Any] = {
        "n_workers": 2, "threads_per_worker": 1, "processes": processes,
        "dashboard_address": "127.0.0.1:0",
    }
    if processes:
        settings["host"] = "127.0.0.1"  # (threads talk inproc://: no socket at all)
    with dask.config.set(config or {}), distributed.LocalCluster(
        **settings
    ) as cluster, distributed.Client(
        cluster, set_as_default=False
    ) as client:
        _clients.append(client)
        try:
            yield client
        finally:
            _clients.remove(client)
    for thread in threading.enumerate():
        # A worker's sampling profiler ("Profile") sees that its worker stopped only at
        # its next sample: wait for it to end (a deadlock detector, not a delay).
        if thread.name == "Profile":
            thread.join(60)
    singletons = [t for t in threading.enumerate() if t.name.startswith(_DASK_SINGLETONS)]
    problems = leak_problems(children, threads, shm, own_threads=singletons)
    assert not problems, "left after the module's cluster closed: " + "; ".join(problems)


@pytest.fixture(scope="module")
def thread_client() -> Iterator[Any]:
    """A client of a LocalCluster of two one-thread workers in this process (fast)."""
    yield from _start(processes=False)


@pytest.fixture(scope="module")
def process_client() -> Iterator[Any]:
    """A client of a LocalCluster of two one-thread worker processes (crashes,
    initializers, terminate). Dask gives up on a task after its second worker dies
    (``allowed-failures`` 1, not 3: each death costs a worker restart)."""
    yield from _start(True, {"distributed.scheduler.allowed-failures": 1})


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Per test: no procpool thread, no child but the cluster's workers, no shm."""
    children = child_pids()
    threads = set(threading.enumerate())
    shm = shm_segments()
    yield
    dask_threads = [  # (Dask's: its workers' pools, its loop's helpers)
        t for t in threading.enumerate() if t not in threads and not t.name.startswith("procpool")
    ]
    problems = leak_problems(children, threads, shm, _cluster_pids(), dask_threads)
    assert not problems, "; ".join(problems)


@pytest.fixture(params=["dask"])
def start_method(request: pytest.FixtureRequest) -> str:
    """One run per test: Dask starts its workers itself."""
    return str(request.param)


def dask_pools(client: Any) -> Iterator[Callable[..., Any]]:
    """The body of a ``make_pool`` fixture: ``make(processes, initializer, initargs,
    maxtasksperchild)`` makes Dask pools on ``client``, all ended after the test (the
    start method, which some test bodies fix to fork, means nothing on Dask)."""
    import procpool.dask

    pools: list[Any] = []

    def make(
        processes: int | None = 2,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
    ) -> Any:
        pool = procpool.dask.Pool(processes, initializer, initargs, maxtasksperchild, client=client)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
        pool.join()


def api_tests(name: str) -> Any:
    """The module ``tests/api/<name>.py``, whose test functions a parity module runs
    with its own fixtures (``make_pool``, ``make_executor``...) on Dask."""
    import sys

    api = str(Path(__file__).parent.parent / "api")
    if api not in sys.path:
        sys.path.append(api)
    return importlib.import_module(name)
