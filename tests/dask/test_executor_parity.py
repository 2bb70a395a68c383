"""The local Executor's API tests, the same bodies, on ``procpool.dask.Executor``.

Test functions are taken from ``tests/api/test_executor.py`` as they are and run here
with this module's ``make_executor`` fixture: a Dask executor on the module's
LocalCluster of threads. What cannot apply on Dask is listed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procpool.dask
from conftest import api_tests

tests = api_tests("test_executor")
hub = tests.hub

test_submit_returns_a_real_future = tests.test_submit_returns_a_real_future
test_exceptions_keep_their_type_and_traceback = tests.test_exceptions_keep_their_type_and_traceback
test_result_timeout_on_a_blocked_call = tests.test_result_timeout_on_a_blocked_call
test_submit_from_many_threads = tests.test_submit_from_many_threads
test_map = tests.test_map
test_map_raises_at_the_failing_item = tests.test_map_raises_at_the_failing_item
test_map_validates_chunksize = tests.test_map_validates_chunksize
test_map_timeout = tests.test_map_timeout
test_as_completed = tests.test_as_completed
test_quick_calls_finish_while_a_worker_is_blocked = (
    tests.test_quick_calls_finish_while_a_worker_is_blocked
)
test_wait_first_completed_and_all = tests.test_wait_first_completed_and_all
test_wait_first_exception = tests.test_wait_first_exception
test_done_callbacks = tests.test_done_callbacks
test_a_failing_callback_is_logged = tests.test_a_failing_callback_is_logged
test_callbacks_see_errors_and_cancellation = tests.test_callbacks_see_errors_and_cancellation
test_cancel_a_pending_call = tests.test_cancel_a_pending_call
test_cancel_a_finished_call_is_refused = tests.test_cancel_a_finished_call_is_refused
test_submit_after_shutdown_raises = tests.test_submit_after_shutdown_raises
test_context_manager_waits_for_submitted_calls = (
    tests.test_context_manager_waits_for_submitted_calls
)
test_shutdown_without_wait_finishes_the_work = tests.test_shutdown_without_wait_finishes_the_work
test_a_cancelled_future_counts_as_done_at_once = (
    tests.test_a_cancelled_future_counts_as_done_at_once
)


@pytest.fixture
def make_executor(thread_client: Any, hub: Any) -> Iterator[Callable[..., Any]]:
    """test_executor's factory (``make(start_method, max_workers, **options)``), making
    Dask executors on the module's cluster."""
    made: list[Any] = []

    def make(start_method: str = "fork", max_workers: int = 2, **options: Any) -> Any:
        executor = procpool.dask.Executor(max_workers, client=thread_client, **options)
        made.append(executor)
        return executor

    yield make
    hub.close()  # release blocked calls first, or shutdown would wait for them
    for executor in made:
        executor.shutdown(wait=True)


@pytest.fixture
def make_pp(make_executor: Callable[..., Any]) -> Callable[..., Any]:
    return make_executor


NOT_ON_DASK = {
    "test_shutdown_cancel_futures": "counts calls in the stdlib's call queue as running",
    "test_running_once_a_worker_holds_the_call": "Dask does not say when a worker "
        "starts a call; running() is true once Dask has it",
    "test_initializer_and_initargs": "in test_pool_processes (a worker plugin)",
    "test_a_failing_initializer_breaks_the_executor": "in test_pool_processes",
    "test_max_tasks_per_child": "refused: Dask does not recycle workers",
    "test_exit_waits_for_submitted_calls": "a child interpreter with its own cluster",
    "test_cancel_stops_a_running_call": "best-effort on a shared cluster (see "
        "test_pool_processes for an own cluster)",
    "test_result_right_after_submit_runs_on_a_lent_worker": "no worker to lend on Dask",
    "test_task_timeout_stops_the_call": "best-effort (see test_pool_processes)",
    "test_max_memory_per_child_recycles_workers": "refused: the workers' memory_limit",
    "test_closing_the_map_iterator_cancels_what_is_left": "stops a running call: "
        "best-effort on a shared cluster",
    "test_map_buffersize_reads_input_lazily": "facade code, tested locally",
}


@pytest.mark.parametrize("name", sorted(NOT_ON_DASK))
def test_not_on_dask(name: str) -> None:
    assert hasattr(tests, name), f"{name} is not in test_executor any more"
    pytest.skip(NOT_ON_DASK[name])
