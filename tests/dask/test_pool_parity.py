"""The local pool's API tests, the same bodies, on ``procpool.dask.Pool``.

Test functions are taken from ``tests/api/test_compat.py`` as they are and run here
with this module's ``make_pool`` and ``pp`` fixtures: a Dask pool on the module's
LocalCluster of threads (fast). Tests that need worker processes (pids, crashes,
initializers, terminate) run in test_pool_processes.py; what cannot apply on Dask is
listed at the end with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procpool.dask
from conftest import api_tests, dask_pools

compat = api_tests("test_compat")
manager = compat.manager

# -- the same bodies
test_apply_async_callbacks = compat.test_apply_async_callbacks
test_map_and_starmap = compat.test_map_and_starmap
test_imap_and_imap_unordered = compat.test_imap_and_imap_unordered
test_exceptions_keep_their_type = compat.test_exceptions_keep_their_type
test_large_arguments_and_results = compat.test_large_arguments_and_results
test_callbacks_can_submit_more_work = compat.test_callbacks_can_submit_more_work
test_async_result_states = compat.test_async_result_states
test_get_returns_only_after_the_callback_ran = compat.test_get_returns_only_after_the_callback_ran
test_close_and_join_rules = compat.test_close_and_join_rules
test_zero_processes_is_an_error = compat.test_zero_processes_is_an_error
test_apply_from_many_threads = compat.test_apply_from_many_threads
test_imap_default_chunksize_fails_only_the_failing_item = (
    compat.test_imap_default_chunksize_fails_only_the_failing_item
)
test_imap_results_can_be_consumed_after_close = compat.test_imap_results_can_be_consumed_after_close
test_worker_traceback_is_the_cause = compat.test_worker_traceback_is_the_cause
test_get_timeout_is_also_a_builtin_timeout_error = (
    compat.test_get_timeout_is_also_a_builtin_timeout_error
)
test_lambdas_and_closures = compat.test_lambdas_and_closures
test_a_failing_callback_is_logged_and_the_pool_goes_on = (
    compat.test_a_failing_callback_is_logged_and_the_pool_goes_on
)
test_plain_values_cross_with_their_exact_types = (
    compat.test_plain_values_cross_with_their_exact_types
)


@pytest.fixture
def make_pool(thread_client: Any, start_method: str) -> Iterator[Callable[..., Any]]:
    """test_compat's factory, making Dask pools on the module's cluster (the start
    method, which some bodies fix to fork, means nothing on Dask)."""
    yield from dask_pools(thread_client)


@pytest.fixture
def pp(thread_client: Any, start_method: str) -> Iterator[procpool.dask.Pool]:
    pool = procpool.dask.Pool(2, client=thread_client)
    yield pool
    pool.terminate()


# -- what does not apply on Dask, and why
NOT_ON_DASK = {
    "test_apply": "pid_of: the workers are threads here (test_pool_processes runs it)",
    "test_maxtasksperchild_replaces_workers": "refused: Dask does not recycle workers",
    "test_initializer_runs_once_per_worker": "in test_pool_processes (worker processes)",
    "test_context_manager_exit_terminates": "in test_pool_processes (an own cluster)",
    "test_processes_default_to_cpu_count": "counts worker processes of the pool",
    "test_initargs_can_carry_synchronization_primitives": "initargs go through a Dask "
        "worker plugin (pickled): no multiprocessing primitives by inheritance",
    "test_queued_tasks_run_while_a_worker_unpickles_a_slow_argument": "Dask schedules "
        "each call; no prefetching to steal back",
    "test_results_that_need_cloudpickle": "start methods",
    "test_progress_bars": "covered by the local suite (facade code, not backend)",
    "test_exit_cancels_unfinished_tasks": "a running Dask task cannot be stopped on a "
        "shared cluster (documented best-effort)",
    "test_queued_tasks_run_while_other_workers_are_busy": "four workers blocked at once; "
        "the module's cluster has two threads",
    "test_imap_reads_an_endless_input_lazily": "50,000 items in adaptive chunks take "
        "~100 s at Dask's per-task cost; test_dask_imap_is_lazy checks the window",
}


@pytest.mark.parametrize("name", sorted(NOT_ON_DASK))
def test_not_on_dask(name: str) -> None:
    assert hasattr(compat, name), f"{name} is not in test_compat any more"
    pytest.skip(NOT_ON_DASK[name])


def test_dask_imap_is_lazy(pp: procpool.dask.Pool) -> None:
    """imap over an endless input reads a bounded window ahead (a short form of
    test_imap_reads_an_endless_input_lazily)."""
    import itertools

    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled = i + 1
            yield i

    bound = pp._processes * procpool._api.pool._DEFAULT_WINDOW_PER_WORKER
    it = pp.imap(compat.square, numbers(), chunksize=1)
    assert list(itertools.islice(it, 20)) == [x * x for x in range(20)]
    assert 20 <= pulled <= 20 + bound
    unordered = pp.imap_unordered(compat.square, numbers(), 5)
    assert len(list(itertools.islice(unordered, 500))) == 500
    assert 500 <= pulled <= 500 + 5 * bound
