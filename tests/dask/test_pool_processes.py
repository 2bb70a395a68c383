"""procpool.dask on worker processes: pids, crashes, initializers, terminate, time
limits. The bodies of tests/api/test_compat.py where they apply; the module's
LocalCluster has two one-thread worker processes bound to 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_funcs import die, die_once, fail_init

import procpool
import procpool.dask
from conftest import api_tests, dask_pools

compat = api_tests("test_compat")
manager = compat.manager

test_apply = compat.test_apply
test_initializer_runs_once_per_worker = compat.test_initializer_runs_once_per_worker


@pytest.fixture
def make_pool(process_client: Any) -> Iterator[Callable[..., Any]]:
    yield from dask_pools(process_client)


def test_a_killed_workers_task_is_retried(
    make_pool: Callable[..., Any], process_client: Any, tmp_path: Path
) -> None:
    """The call kills its worker; Dask runs it again on another, which answers."""
    pool = make_pool()
    marker = tmp_path / "died"
    assert pool.apply(die_once, (str(marker), 42)) == 42
    assert marker.exists()  # it did die once
    assert pool.map(compat.square, range(10)) == [x * x for x in range(10)]
    process_client.wait_for_workers(2)  # the replacement is in (no leak left behind)


def test_killed_worker_is_worker_lost_error(
    make_pool: Callable[..., Any], process_client: Any
) -> None:
    """When Dask gives up (KilledWorker), the call fails with WorkerLostError naming
    the task, and the pool goes on."""
    pool = make_pool()
    result = pool.apply_async(die)
    with pytest.raises(procpool.WorkerLostError, match=r"dask_funcs\.die") as info:
        result.get(compat.GET)
    assert "KilledWorker" in type(info.value.__cause__).__name__
    assert pool.apply(compat.square, (5,)) == 25
    process_client.wait_for_workers(2)


def test_a_failing_initializer_breaks_the_pool(process_client: Any) -> None:
    pool = procpool.dask.Pool(2, fail_init, client=process_client)
    try:
        with pytest.raises(procpool.PoolBrokenError, match="initializer"):
            pool.apply(compat.square, (1,))
    finally:
        pool.terminate()


def test_context_manager_exit_terminates_an_own_cluster(manager: Any) -> None:
    """test_compat's body with a pool that owns its LocalCluster: leaving the block
    ends every worker process, the busy one included."""

    def make() -> Any:
        return procpool.dask.Pool(2)

    compat.test_context_manager_exit_terminates(make, manager)


def test_task_timeout_restarts_the_worker_of_an_own_cluster(manager: Any) -> None:
    """On its own cluster of processes, a call past its time limit fails with
    TaskTimeoutError and its worker is restarted: the pool goes on."""
    release = manager.Event()
    with procpool.dask.Pool(1) as pool:
        before = pool.worker_pids
        result = pool.apply_async(compat.wait_event, (release,), task_timeout=0.5)
        with pytest.raises(procpool.TaskTimeoutError):
            result.get(compat.GET)
        assert pool.apply(compat.square, (3,)) == 9
        assert pool.worker_pids != before
    release.set()


def test_refused_options() -> None:
    with pytest.raises(ValueError, match="maxtasksperchild"):
        procpool.dask.Pool(2, maxtasksperchild=5)
    with pytest.raises(ValueError, match="start method"):
        procpool.dask.Pool(2, context="spawn")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        procpool.dask.Executor(2, max_tasks_per_child=5)
    with pytest.raises(ValueError, match="address= or client="):
        procpool.dask.Pool(2, address="tcp://127.0.0.1:1", client=object())


def test_worker_pids_are_the_dask_workers(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    pids = pool.worker_pids
    assert len(pids) == 2 and os.getpid() not in pids
