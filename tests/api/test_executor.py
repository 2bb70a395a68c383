"""The concurrent.futures contract: the same test bodies against both executors.

The first part runs every test against ``concurrent.futures.ProcessPoolExecutor`` and
``procpool.Executor`` (the ``make_executor`` fixture), so a failure on the procpool side
is a break of the drop-in contract. It holds only behaviour both share: the stdlib
executor breaks for good when a worker dies, so crashes are tested (procpool only) in
``test_executor_crash.py``. Tests where the start method matters (pickling functions,
initializers, replacing workers) run under every start method; tests of parent-side
semantics (future states, waiting, shutdown) run under fork only, to keep the suite fast.

The second part, after the ``procpool only`` banner, covers what procpool adds:
cancelling a running call, time limits, retries, worker recycling, callbacks off the
scheduler thread, ``buffersize`` before Python 3.14, ``terminate_workers``.

Nothing sleeps to synchronize: calls that must block check in with the test's ``Hub``
(see ``executor_funcs``). ``GET`` timeouts are deadlock detectors only; ``SHORT`` is for
a timeout that must run out because the call waited for is blocked.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import itertools
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import procpool
from executor_funcs import (
    CustomError,
    Hub,
    add,
    check_in,
    die_unless_marked,
    fail_init,
    fail_on_three,
    init_value,
    pid_of,
    raise_custom,
    run_crash,
    set_init_value,
    square,
)
from proc_utils import GET, SHORT, TESTS, calls_racing_with_kills

STDLIB = "ProcessPoolExecutor"
PROCPOOL = "procpool.Executor"
EXECUTORS: dict[str, Callable[..., Any]] = {
    STDLIB: cf.ProcessPoolExecutor,
    PROCPOOL: procpool.Executor,
}


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub(GET)
    yield hub
    hub.close()


@pytest.fixture(params=[STDLIB, PROCPOOL])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_executor(kind: str, hub: Hub) -> Iterator[Callable[..., Any]]:
    """``make(start_method="fork", max_workers=2, **options)``; all shut down after."""
    made: list[Any] = []

    def make(start_method: str = "fork", max_workers: int = 2, **options: Any) -> Any:
        context = multiprocessing.get_context(start_method)
        executor = EXECUTORS[kind](max_workers, context, **options)
        made.append(executor)
        return executor

    yield make
    hub.close()  # release blocked calls first, or shutdown would wait for them
    for executor in made:
        executor.shutdown(wait=True)


def join_threads_since(baseline: set[threading.Thread]) -> None:
    """After ``shutdown(wait=False)``: wait for the threads the executor left behind.

    They end once the work is done (the stdlib's manager thread reaps its workers
    before it ends; so does procpool's shutdown thread).
    """
    for thread in set(threading.enumerate()) - baseline:
        # enumerate() lists a thread whose start() has not returned yet, and joining
        # it then raises on Python 3.12+: wait for it to be running first.
        thread._started.wait(GET)  # type: ignore[attr-defined]
        thread.join(GET)
        assert not thread.is_alive(), f"{thread.name} did not end"


def block_both_workers(executor: Any, hub: Hub) -> list[cf.Future[Any]]:
    """Occupy the two workers with checked-in calls; return their futures."""
    blockers = [executor.submit(check_in, hub.address, i) for i in range(2)]
    hub.arrive()
    hub.arrive()
    return blockers


# -- submit and results


def test_submit_returns_a_real_future(make_executor: Callable[..., Any], start_method: str) -> None:
    with make_executor(start_method) as executor:
        future = executor.submit(square, 7)
        assert isinstance(future, cf.Future)
        assert future.result(GET) == 49
        assert future.done() and not future.running() and not future.cancelled()
        assert executor.submit(add, 1, b=2).result(GET) == 3


def test_exceptions_keep_their_type_and_traceback(
    make_executor: Callable[..., Any], start_method: str
) -> None:
    executor = make_executor(start_method)
    future = executor.submit(raise_custom, "bad input")
    error = future.exception(GET)
    assert isinstance(error, CustomError) and str(error) == "bad input"
    assert "raise_custom" in str(error.__cause__)  # the worker's traceback
    with pytest.raises(CustomError, match="bad input"):
        future.result(GET)
    assert executor.submit(square, 3).result(GET) == 9


def test_result_timeout_on_a_blocked_call(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    future = executor.submit(check_in, hub.address, "done")
    hub.arrive()
    with pytest.raises(cf.TimeoutError):
        future.result(SHORT)
    with pytest.raises(TimeoutError):  # the same class since Python 3.11
        future.exception(SHORT)
    hub.release_all()
    assert future.result(GET) == "done"


def test_submit_from_many_threads(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    results: dict[int, list[int]] = {}

    def client(n: int) -> None:
        futures = [executor.submit(square, n * 100 + i) for i in range(25)]
        results[n] = [f.result(GET) for f in futures]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GET)
    assert results == {n: [(n * 100 + i) ** 2 for i in range(25)] for n in range(4)}


# -- map


def test_map(make_executor: Callable[..., Any], start_method: str) -> None:
    executor = make_executor(start_method)
    assert list(executor.map(square, range(20))) == [x * x for x in range(20)]
    assert list(executor.map(square, range(20), chunksize=3)) == [x * x for x in range(20)]
    assert list(executor.map(add, range(5), range(10, 20))) == [10, 12, 14, 16, 18]
    assert list(executor.map(add, range(7), [1] * 7, chunksize=2)) == list(range(1, 8))
    assert list(executor.map(square, [])) == []
    assert list(executor.map(square, iter(range(4)), timeout=GET)) == [0, 1, 4, 9]


def test_map_raises_at_the_failing_item(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    for chunksize in (1, 2):
        results = executor.map(fail_on_three, range(6), chunksize=chunksize)
        assert [next(results) for _ in range(2)] == [0, 1]
        if chunksize == 1:
            assert next(results) == 4
        with pytest.raises(ValueError, match="three is not allowed"):
            list(results)


def test_map_validates_chunksize(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    with pytest.raises(ValueError):
        executor.map(square, range(3), chunksize=0)


def test_map_timeout(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    results = executor.map(check_in, [hub.address] * 2, timeout=SHORT)
    with pytest.raises(cf.TimeoutError):
        next(results)


# -- waiting


def test_as_completed(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    quick = [executor.submit(square, i) for i in range(5)]
    seen = []
    for future in cf.as_completed(quick, timeout=GET):
        seen.append(future.result())
    assert sorted(seen) == [0, 1, 4, 9, 16]
    assert list(cf.as_completed(quick, timeout=GET))  # finished futures come at once
    blocked = executor.submit(check_in, hub.address, "last")
    hub.arrive()
    with pytest.raises(cf.TimeoutError):
        list(cf.as_completed([blocked], timeout=SHORT))
    hub.release_all()
    assert [f.result() for f in cf.as_completed([blocked], timeout=GET)] == ["last"]


def test_quick_calls_finish_while_a_worker_is_blocked(
    make_executor: Callable[..., Any], hub: Hub
) -> None:
    executor = make_executor()
    assert executor.submit(square, 1).result(GET) == 1  # the executor knows calls are quick
    blocked = executor.submit(check_in, hub.address, "late")
    hub.arrive()
    quick = [executor.submit(square, i) for i in range(40)]
    _, not_done = cf.wait(quick, timeout=GET)
    assert not not_done and not blocked.done()
    hub.release_all()
    assert blocked.result(GET) == "late"


def test_wait_first_completed_and_all(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    blocked = executor.submit(check_in, hub.address, "late")
    hub.arrive()
    quick = executor.submit(square, 4)
    done, not_done = cf.wait([blocked, quick], timeout=GET, return_when=cf.FIRST_COMPLETED)
    assert done == {quick} and not_done == {blocked}
    done, not_done = cf.wait([blocked, quick], timeout=SHORT)
    assert not_done == {blocked}
    hub.release_all()
    done, not_done = cf.wait([blocked, quick], timeout=GET)
    assert done == {blocked, quick} and not not_done


def test_wait_first_exception(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    blocked = executor.submit(check_in, hub.address)
    hub.arrive()
    failing = executor.submit(raise_custom, "first")
    done, not_done = cf.wait([blocked, failing], timeout=GET, return_when=cf.FIRST_EXCEPTION)
    assert done == {failing} and not_done == {blocked}


# -- done callbacks


def test_done_callbacks(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    calls: list[tuple[str, Any]] = []
    ran = threading.Event()
    future = executor.submit(check_in, hub.address, 11)
    hub.arrive()
    future.add_done_callback(lambda f: calls.append(("first", f)))
    future.add_done_callback(lambda f: calls.append(("second", f)))
    future.add_done_callback(lambda f: ran.set())
    assert not calls
    hub.release_all()
    assert ran.wait(GET)
    assert calls == [("first", future), ("second", future)]
    # On a finished future the callback runs at once, in the calling thread.
    here: list[threading.Thread] = []
    future.add_done_callback(lambda f: here.append(threading.current_thread()))
    assert here == [threading.current_thread()]


def test_a_failing_callback_is_logged(
    make_executor: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor()
    after = threading.Event()
    future = executor.submit(square, 3)

    def broken(_: cf.Future[int]) -> None:
        raise RuntimeError("callback bug")

    future.add_done_callback(broken)
    future.add_done_callback(lambda f: after.set())  # runs after broken's error is logged
    assert after.wait(GET)
    assert future.result() == 9
    assert "exception calling callback" in caplog.text
    assert "callback bug" in caplog.text
    assert {r.name for r in caplog.records if "callback" in r.getMessage()} == {
        "concurrent.futures"
    }


def test_callbacks_see_errors_and_cancellation(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    block_both_workers(executor, hub)
    failing = executor.submit(raise_custom, "oops")
    for i in range(3):  # fill the stdlib's call queue (calls there count as running)
        executor.submit(square, i)
    queued = executor.submit(square, 2)
    outcomes: list[str] = []
    queued.add_done_callback(lambda f: outcomes.append("cancelled" if f.cancelled() else "?"))
    assert queued.cancel()
    assert outcomes == ["cancelled"]  # cancel() runs callbacks in the caller's thread
    got = threading.Event()
    failing.add_done_callback(lambda f: (outcomes.append(repr(f.exception())), got.set()))
    hub.release_all()
    assert got.wait(GET)
    assert outcomes[1] == "CustomError('oops')"


# -- cancel


def test_cancel_a_pending_call(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    blockers = block_both_workers(executor, hub)
    # The stdlib hands up to max_workers + 1 calls to its call queue, where they count
    # as running; the last ones of these stay pending under both executors.
    queued = [executor.submit(square, i) for i in range(6)]
    last = queued[-1]
    assert not last.running()
    assert last.cancel() and last.cancel()
    assert last.cancelled() and last.done()
    with pytest.raises(cf.CancelledError):
        last.result(GET)
    hub.release_all()
    assert [f.result(GET) for f in queued[:3]] == [0, 1, 4]
    assert [f.result(GET) for f in blockers] == [0, 1]


def test_cancel_a_finished_call_is_refused(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    future = executor.submit(square, 5)
    assert future.result(GET) == 25
    assert not future.cancel()
    assert not future.cancelled() and future.result() == 25


def test_running_once_a_worker_holds_the_call(make_executor: Callable[..., Any], hub: Hub) -> None:
    executor = make_executor()
    future = executor.submit(check_in, hub.address)
    hub.arrive()
    assert future.running() and not future.done()
    hub.release_all()
    future.result(GET)
    assert not future.running()


# -- shutdown


def test_submit_after_shutdown_raises(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)
    executor.shutdown()  # a second shutdown is harmless


def test_context_manager_waits_for_submitted_calls(make_executor: Callable[..., Any]) -> None:
    with make_executor() as executor:
        futures = [executor.submit(square, i) for i in range(10)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [x * x for x in range(10)]
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_shutdown_cancel_futures(make_executor: Callable[..., Any], hub: Hub) -> None:
    threads = set(threading.enumerate())
    executor = make_executor()
    blockers = block_both_workers(executor, hub)
    queued = [executor.submit(square, i) for i in range(8)]
    # The stdlib cancels from its manager thread, later: wait for the callbacks.
    cancelled = [threading.Event() for _ in queued[3:]]
    for future, event in zip(queued[3:], cancelled, strict=True):
        future.add_done_callback(lambda f, event=event: event.set())
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(event.wait(GET) for event in cancelled)
    assert all(f.cancelled() for f in queued[3:])
    hub.release_all()
    assert [f.result(GET) for f in blockers] == [0, 1]
    for future in queued[:3]:  # handed to a worker (the stdlib's call queue) or cancelled
        assert future.cancelled() or future.result(GET) == queued.index(future) ** 2
    join_threads_since(threads)


def test_shutdown_without_wait_finishes_the_work(
    make_executor: Callable[..., Any], hub: Hub
) -> None:
    threads = set(threading.enumerate())
    executor = make_executor()
    blocked = executor.submit(check_in, hub.address, "finished")
    hub.arrive()
    executor.shutdown(wait=False)
    assert not blocked.done()
    hub.release_all()
    assert blocked.result(GET) == "finished"
    join_threads_since(threads)


EXIT_SCRIPT = """
import concurrent.futures, multiprocessing, sys
sys.path.insert(0, {tests!r})
import procpool
from executor_funcs import check_in

make = {{
    "ProcessPoolExecutor": concurrent.futures.ProcessPoolExecutor,
    "procpool.Executor": procpool.Executor,
}}
executor = make[{kind!r}](2, multiprocessing.get_context("fork"))
for i in range(2):
    future = executor.submit(check_in, {address!r}, i)
    future.add_done_callback(lambda f: print("done", f.result(), flush=True))
print("exiting", flush=True)
"""


def test_exit_waits_for_submitted_calls(kind: str, hub: Hub) -> None:
    # "Regardless of the value of wait, the entire Python program will not exit
    # until all pending futures are done executing" (the shutdown docs); here the
    # program never calls shutdown at all.
    tests = str(TESTS)
    script = EXIT_SCRIPT.format(tests=tests, kind=kind, address=hub.address)
    command = [sys.executable, "-c", script]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        hub.arrive()
        hub.arrive()
        assert proc.stdout.readline() == "exiting\n"
        hub.release_all()  # only now can the calls finish: exit must have waited
        out, _ = proc.communicate(timeout=GET)
    assert sorted(out.split("\n")) == ["", "done 0", "done 1"]
    assert proc.returncode == 0


# -- construction, initializers, worker lifetime


def test_max_workers_must_be_positive(kind: str) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            EXECUTORS[kind](bad)


def test_bad_options_are_rejected(kind: str) -> None:
    with pytest.raises(TypeError):
        EXECUTORS[kind](1, initializer=42)
    with pytest.raises((ValueError, TypeError)):
        EXECUTORS[kind](1, max_tasks_per_child=0)


def test_initializer_and_initargs(make_executor: Callable[..., Any], start_method: str) -> None:
    executor = make_executor(start_method, initializer=set_init_value, initargs=("ready",))
    assert list(executor.map(init_value, range(4))) == ["ready"] * 4


def test_a_failing_initializer_breaks_the_executor(
    make_executor: Callable[..., Any], start_method: str
) -> None:
    executor = make_executor(start_method, initializer=fail_init)
    with pytest.raises(BrokenProcessPool):
        executor.submit(square, 2).result(GET)


# (fork too, which the stdlib refuses: procpool forks workers from a single-threaded
# zygote, see docs/architecture.md)
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_max_tasks_per_child(
    make_executor: Callable[..., Any], kind: str, start_method: str
) -> None:
    if kind == STDLIB and start_method == "fork":
        pytest.skip("the stdlib refuses max_tasks_per_child under fork")
    executor = make_executor(start_method, max_workers=1, max_tasks_per_child=1)
    pids = [executor.submit(pid_of).result(GET) for _ in range(3)]
    assert len(set(pids)) == 3


def test_signatures_match_the_stdlib() -> None:
    def params(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    ours, theirs = procpool.Executor, cf.ProcessPoolExecutor
    init = params(ours.__init__)
    assert init[: len(params(theirs.__init__))] == params(theirs.__init__)
    assert params(ours.submit) == params(theirs.submit)
    assert params(ours.shutdown) == params(theirs.shutdown)
    assert params(ours.map)[:5] == params(theirs.map)[:5]
    assert issubclass(ours, cf.Executor)


# -- procpool only ------------------------------------------------------------------


@pytest.fixture
def make_pp(hub: Hub) -> Iterator[Callable[..., procpool.Executor]]:
    made: list[procpool.Executor] = []

    def make(max_workers: int = 2, start_method: str = "fork", **options: Any) -> procpool.Executor:
        executor = procpool.Executor(max_workers, start_method, **options)
        made.append(executor)
        return executor

    yield make
    hub.close()
    for executor in made:
        executor.shutdown(wait=True)


def test_cancel_stops_a_running_call(make_pp: Callable[..., procpool.Executor], hub: Hub) -> None:
    executor = make_pp()
    future = executor.submit(check_in, hub.address, "never")
    call = hub.arrive()
    assert future.running()
    assert future.cancel()  # the stdlib would refuse: the call is running
    assert future.cancelled()
    with pytest.raises(cf.CancelledError):
        future.result(GET)
    assert call.wait_gone()  # its worker was stopped ...
    assert executor.submit(square, 6).result(GET) == 36  # ... and replaced


def _count_direct_calls(executor: procpool.Executor) -> list[bool]:
    """Record what the engine's direct path answers (True: the call ran on a worker
    lent to the waiting thread)."""
    engine = executor._engine
    real = engine.call_direct
    seen: list[bool] = []

    def recording(task: Any, queued: bool = False) -> bool:
        seen.append(real(task, queued))
        return seen[-1]

    engine.call_direct = recording  # type: ignore[method-assign]
    return seen


def _skip_next_wake(executor: procpool.Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Do not wake the scheduler for the next submit: that call then waits in the
    inbox until the thread that asks for its result takes it to a lent worker."""
    inbox = executor._engine._inbox
    real_wake = inbox.wake

    def skip_once() -> None:
        inbox.wake = real_wake  # type: ignore[method-assign]

    monkeypatch.setattr(inbox, "wake", skip_once)


def test_result_right_after_submit_runs_on_a_lent_worker(
    make_pp: Callable[..., procpool.Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``submit(f).result()`` (and ``.exception()``) runs the call from the waiting
    thread on an idle worker, as a blocking ``Pool.apply`` does: same results, same
    errors. Here the scheduler is never woken for the new calls, so each one waits in
    the inbox until its own thread takes it: without the lent worker this would hang."""
    executor = make_pp(1)
    assert executor.submit(square, 2).result() == 4  # the worker is up
    seen = _count_direct_calls(executor)
    monkeypatch.setattr(executor._engine._inbox, "wake", lambda: None)
    assert [executor.submit(square, i).result() for i in range(20)] == [i * i for i in range(20)]
    with pytest.raises(CustomError, match="direct") as info:
        executor.submit(raise_custom, "direct").result()
    assert isinstance(info.value.__cause__, procpool.RemoteTraceback)
    assert executor.submit(add, 2, b=3).result() == 5
    error = executor.submit(raise_custom, "asked by exception()").exception()
    assert isinstance(error, CustomError) and "exception()" in str(error)
    assert executor.submit(square, 4).exception() is None
    assert seen == [True] * 24


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_result_right_after_submit_survives_a_crash(
    make_pp: Callable[..., procpool.Executor], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A worker lent to ``result()`` dies: that call fails alone, and the executor
    goes on. (The scheduler is not woken by the fatal call's submit, so the call is
    sure to run on the lent worker; the death then wakes it as usual.)"""
    executor = make_pp(1)
    assert executor.submit(square, 3).result() == 9
    seen = _count_direct_calls(executor)
    _skip_next_wake(executor, monkeypatch)
    with pytest.raises(procpool.WorkerLostError):
        executor.submit(run_crash, how).result()
    assert seen == [True]
    assert [executor.submit(square, i).result() for i in range(10)] == [i * i for i in range(10)]


def test_cancel_while_another_thread_waits_on_a_lent_worker(
    make_pp: Callable[..., procpool.Executor], hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = make_pp(1)
    assert executor.submit(square, 3).result() == 9  # the worker is up
    seen = _count_direct_calls(executor)
    _skip_next_wake(executor, monkeypatch)
    futures: list[cf.Future[Any]] = []
    outcome: list[object] = []

    def wait_for_it() -> None:
        futures.append(executor.submit(check_in, hub.address, "never"))
        try:
            outcome.append(futures[0].result())
        except cf.CancelledError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    call = hub.arrive()
    assert futures[0].cancel()
    waiter.join(GET)
    assert not waiter.is_alive() and isinstance(outcome[0], cf.CancelledError)
    assert seen == [True]
    assert call.wait_gone()  # its worker was stopped ...
    assert executor.submit(square, 6).result() == 36  # ... and replaced


def test_result_after_submit_from_threads_while_workers_die(
    make_pp: Callable[..., procpool.Executor],
) -> None:
    """Threads doing ``submit(f).result()`` at once, some calls killing their worker:
    each ends with its own result or WorkerLostError, and nothing hangs."""
    executor = make_pp(2)
    outcomes = calls_racing_with_kills(
        lambda x: executor.submit(square, x).result(),
        lambda: executor.submit(run_crash, "kill").result(),
        procpool.WorkerLostError,
    )
    assert len(outcomes) == 120
    assert outcomes.count("lost") == 12 and outcomes.count(True) == 108


def test_map_timeout_stops_the_running_calls(
    make_pp: Callable[..., procpool.Executor], hub: Hub
) -> None:
    executor = make_pp()
    results = executor.map(check_in, [hub.address] * 2, timeout=SHORT)
    first, second = hub.arrive(), hub.arrive()
    with pytest.raises(TimeoutError):
        next(results)
    assert first.wait_gone() and second.wait_gone()
    assert executor.submit(square, 3).result(GET) == 9


def test_closing_the_map_iterator_cancels_what_is_left(
    make_pp: Callable[..., procpool.Executor], hub: Hub
) -> None:
    executor = make_pp()
    results = executor.map(check_in, [hub.address] * 3, range(3))
    for call in (hub.arrive(), hub.arrive()):
        call.release()
    assert next(results) == 0
    third = hub.arrive()
    results.close()  # type: ignore[attr-defined]
    assert third.wait_gone()  # the call still out was stopped
    assert executor.submit(square, 3).result(GET) == 9


def test_a_cancelled_future_counts_as_done_at_once(
    make_pp: Callable[..., procpool.Executor], hub: Hub
) -> None:
    # The stdlib notifies wait() and as_completed() of a cancel only when its manager
    # thread next looks at the call, which may be much later.
    executor = make_pp()
    block_both_workers(executor, hub)
    queued = executor.submit(square, 2)
    assert queued.cancel()
    done, _ = cf.wait([queued], timeout=GET)
    assert done == {queued}
    assert list(cf.as_completed([queued], timeout=GET)) == [queued]


def test_map_buffersize_reads_input_lazily(make_pp: Callable[..., procpool.Executor]) -> None:
    executor = make_pp()
    consumed = []

    def endless() -> Iterator[int]:
        for i in itertools.count():
            consumed.append(i)
            yield i

    results = executor.map(square, endless(), buffersize=3)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(consumed) <= 5 + 3
    results.close()  # type: ignore[attr-defined]
    chunked = executor.map(square, endless(), chunksize=4, buffersize=2)
    assert list(itertools.islice(chunked, 10)) == [x * x for x in range(10)]
    with pytest.raises(ValueError):
        executor.map(square, [], buffersize=0)
    with pytest.raises(TypeError):
        executor.map(square, [], buffersize=1.5)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.version_info < (3, 14), reason="buffersize is new in Python 3.14")
def test_map_buffersize_like_the_stdlib(make_executor: Callable[..., Any]) -> None:
    executor = make_executor()
    results = executor.map(square, itertools.count(), buffersize=2)
    assert [next(results) for _ in range(4)] == [0, 1, 4, 9]


def test_task_timeout_stops_the_call(make_pp: Callable[..., procpool.Executor], hub: Hub) -> None:
    executor = make_pp(task_timeout=0.2)
    future = executor.submit(check_in, hub.address)
    call = hub.arrive()
    error = future.exception(GET)
    assert isinstance(error, procpool.TaskTimeoutError) and isinstance(error, TimeoutError)
    assert "time limit of 0.2s" in str(error)
    assert call.wait_gone()
    assert executor.submit(square, 4).result(GET) == 16


def test_retries_rerun_a_call_whose_worker_died(
    make_pp: Callable[..., procpool.Executor], tmp_path: Path
) -> None:
    executor = make_pp(retries=1)
    assert executor.submit(die_unless_marked, str(tmp_path / "a")).result(GET) == "second attempt"
    no_retry = make_pp()
    error = no_retry.submit(die_unless_marked, str(tmp_path / "b")).exception(GET)
    assert isinstance(error, procpool.WorkerLostError) and error.exitcode == 7


def test_max_memory_per_child_recycles_workers(make_pp: Callable[..., procpool.Executor]) -> None:
    executor = make_pp(max_workers=1, max_memory_per_child=1)  # every worker is "too big"
    pids = [executor.submit(pid_of).result(GET) for _ in range(3)]
    assert len(set(pids)) == 3


def test_callbacks_run_off_the_scheduler_thread(
    make_pp: Callable[..., procpool.Executor], hub: Hub
) -> None:
    executor = make_pp()
    names: list[str] = []
    ran = threading.Event()
    future = executor.submit(check_in, hub.address)
    hub.arrive()
    future.add_done_callback(lambda f: (names.append(threading.current_thread().name), ran.set()))
    hub.release_all()
    assert ran.wait(GET)
    assert names == ["procpool-callbacks"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        procpool.Executor(1, task_timeout=0)
    with pytest.raises(ValueError):
        procpool.Executor(1, retries=-1)
    with pytest.raises(ValueError):
        procpool.Executor(1, max_memory_per_child=0)


def test_terminate_workers(make_pp: Callable[..., procpool.Executor], hub: Hub) -> None:
    threads = set(threading.enumerate())
    executor = make_pp()
    running = block_both_workers(executor, hub)
    queued = [executor.submit(square, i) for i in range(4)]
    executor.terminate_workers()
    assert all(f.cancelled() for f in queued)
    for future in running:
        assert isinstance(future.exception(GET), cf.CancelledError | BrokenProcessPool)
    assert all(call.wait_gone() for call in hub.arrived)
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)
    join_threads_since(threads)


def test_kill_workers(make_pp: Callable[..., procpool.Executor], hub: Hub) -> None:
    threads = set(threading.enumerate())
    executor = make_pp()
    running = block_both_workers(executor, hub)
    executor.kill_workers()
    for future in running:
        assert isinstance(future.exception(GET), cf.CancelledError | BrokenProcessPool)
    assert all(call.wait_gone() for call in hub.arrived)
    join_threads_since(threads)


def test_shutdown_without_wait_leaves_no_thread_behind(
    make_pp: Callable[..., procpool.Executor], hub: Hub
) -> None:
    threads = set(threading.enumerate())
    executor = make_pp()
    future = executor.submit(check_in, hub.address, 1)
    hub.arrive()
    executor.shutdown(wait=False)
    hub.release_all()
    assert future.result(GET) == 1
    join_threads_since(threads)


def test_a_dropped_executor_finishes_and_cleans_up() -> None:
    threads = set(threading.enumerate())
    executor = procpool.Executor(1, "fork")
    future = executor.submit(square, 8)
    del executor  # no shutdown(): the finalizer closes the engine
    import gc

    gc.collect()
    assert future.result(GET) == 64
    join_threads_since(threads)


def test_repr_and_worker_pids(make_pp: Callable[..., procpool.Executor]) -> None:
    executor = make_pp()
    assert "max_workers=2" in repr(executor)
    assert executor.submit(pid_of).result(GET) in executor.worker_pids
    executor.shutdown()
    assert "shutdown" in repr(executor)


def test_the_future_sets_every_attribute_of_the_stdlib_future() -> None:
    # procpool's Future skips Future.__init__ (it makes a Condition at once); this
    # catches a Python version whose Future.__init__ sets something new.
    from procpool._api.future import Future

    future: Future[Any] = Future(None, set())  # type: ignore[arg-type]  # no engine needed
    assert set(vars(cf.Future())) - {"_condition"} <= set(vars(future))
    assert isinstance(future._condition, threading.Condition)  # made on first use
