"""Issue 12, items 1, 2 and 6: results keep their pool, a failing map item lets the
others run, and the worker views ``Pool._pool`` and ``Executor._processes``.

Where the stdlib's behaviour is the contract, the same test runs against it too.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.pool
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import procpool
from compat_funcs import CustomError, hold, pid_of, write_unless_failing
from conftest import child_pids
from proc_utils import GET, still_alive_after

POOLS: dict[str, Callable[..., Any]] = {
    "multiprocessing.Pool": multiprocessing.pool.Pool,
    "procpool.Pool": procpool.Pool,
}
EXECUTORS: dict[str, Callable[..., Any]] = {
    "ProcessPoolExecutor": ProcessPoolExecutor,
    "procpool.Executor": procpool.Executor,
}


@pytest.fixture(params=list(POOLS))
def pool_type(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return POOLS[request.param]


@contextlib.contextmanager
def dropped_pools() -> Iterator[list[warnings.WarningMessage]]:
    """Let the block drop pools; on leaving, wait for every thread and worker they
    started to end, and give the ResourceWarnings they raised (on any thread).

    Both the stdlib's pools and procpool's are finalized by one of their own threads
    once the last result is in, an instant after ``get()`` has returned.
    """
    children = child_pids()
    threads = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught
        gc.collect()
        for thread in threading.enumerate():
            if thread not in threads:
                thread.join(GET)
        assert not still_alive_after(child_pids() - children, GET)


# -- item 1: a pending result keeps its pool alive


def test_a_result_of_an_unnamed_pool_can_be_waited_for(start_method: str) -> None:
    # The stdlib gives the same answers, but its dropped pools keep their three
    # handler threads until the interpreter exits, which the leak check would
    # report; so this runs against procpool only.
    ctx = multiprocessing.get_context(start_method)
    with dropped_pools():
        assert procpool.Pool(2, context=ctx).apply_async(abs, (-1,)).get(GET) == 1
        assert procpool.Pool(2, context=ctx).map_async(abs, [-1, -2]).get(GET) == [1, 2]
        assert list(procpool.Pool(2, context=ctx).imap(abs, [-1, -2])) == [1, 2]
        assert sorted(procpool.Pool(2, context=ctx).imap_unordered(abs, [-3, -4])) == [3, 4]


def test_a_future_of_an_unnamed_executor_can_be_waited_for(start_method: str) -> None:
    ctx = multiprocessing.get_context(start_method)
    with dropped_pools():
        assert procpool.Executor(2, ctx).submit(abs, -1).result(GET) == 1
        assert list(procpool.Executor(2, ctx).map(abs, [-1, -2], timeout=GET)) == [1, 2]


def test_a_dropped_pool_is_finalized_once_its_results_are_in() -> None:
    with dropped_pools() as caught:
        result = procpool.Pool(2).apply_async(pid_of)
        assert result.get(GET) > 0
        del result
    # (dropped_pools waited for its workers and threads to end)
    assert [str(w.message) for w in caught] == [
        "unclosed running multiprocessing pool <procpool.Pool state=running processes=2>"
    ]


# -- item 2: one failing map item does not stop the others


@pytest.mark.parametrize("how", ["map", "map_async", "starmap_async"])
def test_a_failing_item_lets_every_other_item_run(
    pool_type: Callable[..., Any], how: str, tmp_path: Path
) -> None:
    items = [(str(tmp_path), i, 1) for i in range(6)]
    errors: list[BaseException] = []
    # The `with` block terminates the pool as soon as map raises: the other items
    # must already be done by then, as with the stdlib.
    with pytest.raises(CustomError, match="item 1 failed"), pool_type(2) as pool:
        if how == "map":
            pool.map(write_unless_failing, items, chunksize=1)
        elif how == "map_async":
            pool.map_async(
                write_unless_failing, items, chunksize=1, error_callback=errors.append
            ).get(GET)
        else:
            pool.starmap_async(
                _write_unless_failing_star, [(item,) for item in items], chunksize=1,
                error_callback=errors.append,
            ).get(GET)
    assert sorted(os.listdir(tmp_path)) == ["0", "2", "3", "4", "5"]
    if how != "map":
        assert len(errors) == 1 and isinstance(errors[0], CustomError)


def _write_unless_failing_star(item: tuple[str, int, int]) -> int:
    return write_unless_failing(item)


def test_cancel_is_the_opt_in_to_stop_the_rest_of_a_map(tmp_path: Path) -> None:
    with multiprocessing.Manager() as manager, procpool.Pool(2) as pool:
        release = manager.Event()
        result = pool.map_async(hold, [release] * 4, chunksize=1)
        assert result.cancel()
        release.set()
        with pytest.raises(procpool.CancelledError):
            result.get(GET)
        # The pool goes on.
        assert pool.map(abs, [-1, -2]) == [1, 2]


# -- item 6: Pool._pool and Executor._processes


def test_pool_workers_are_visible_as_process_views(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        pids = {pool.apply(pid_of) for _ in range(4)}
        workers = list(pool._pool)
        assert len(workers) == 2
        assert pids <= {w.pid for w in workers}
        for worker in workers:
            assert worker.is_alive() and worker.exitcode is None and worker.name
        victim = workers[0]
        victim.terminate()
        victim.join(GET)
        assert not victim.is_alive()
        if start_method != "forkserver":  # (the server's child: its code comes later)
            assert victim.exitcode == -signal.SIGTERM


def test_executor_processes_map_pids_to_process_views(start_method: str) -> None:
    with procpool.Executor(2, start_method) as executor:
        pids = {executor.submit(pid_of).result(GET) for _ in range(4)}
        processes = executor._processes
        assert pids <= set(processes)
        for pid, process in processes.items():
            assert process.pid == pid and process.is_alive() and process.exitcode is None
