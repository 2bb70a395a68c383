"""Drop-in compatibility: the same test bodies against ``multiprocessing`` and procpool.

The first part runs every test against both ``multiprocessing.pool.Pool`` and
``procpool.Pool`` (the ``make_pool`` fixture), with the stdlib argument names and a
multiprocessing context, so a failure on the procpool side is a break of the drop-in
contract. Tests where the start method matters (pickling functions, initializers,
replacing workers) run under every start method; tests of parent-side semantics
(result states, lifecycle rules, threads) run under fork only, to keep the suite fast.

The second part, after the ``procpool only`` banner, covers what procpool adds on top
of the stdlib: remote tracebacks, lambdas everywhere, progress bars, lazy ``imap``,
logged callback errors.

Nothing here sleeps to synchronize: tasks block on ``Manager`` events the test sets.
Timeouts passed to ``get`` are deadlock detectors only (``GET``), except the tiny ones
that check a ``get(timeout)`` on a task known to be blocked.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import multiprocessing
import multiprocessing.pool
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procpool
from compat_funcs import (
    CustomError,
    SlowToUnpickle,
    add,
    barrier_pid,
    fail_at_3000,
    fail_on_three,
    hold,
    identity,
    imap_gate,
    init_report,
    length,
    make_adder,
    make_bytes,
    pid_of,
    raise_error,
    raise_in_named_function,
    record_init,
    square,
    started_then_wait,
    types_and_value,
    use_inherited,
    wait_event,
)
from conftest import child_pids
from proc_utils import GET, SHORT, drain, in_threads

STDLIB = "multiprocessing"
PROCPOOL = "procpool"
POOLS: dict[str, Callable[..., Any]] = {
    STDLIB: multiprocessing.pool.Pool,
    PROCPOOL: procpool.Pool,
}

fork_only = pytest.mark.parametrize("start_method", ["fork"])


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    """One Manager for the module: its Event/Barrier proxies pickle under every method."""
    mgr = multiprocessing.get_context("spawn").Manager()
    yield mgr
    mgr.shutdown()


@pytest.fixture(params=[STDLIB, PROCPOOL])
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_pool(impl: str, start_method: str) -> Iterator[Callable[..., Any]]:
    """A factory with the stdlib's signature; every pool is terminated at teardown."""
    ctx = multiprocessing.get_context(start_method)
    pools: list[Any] = []

    def make(
        processes: int | None = 2,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
    ) -> Any:
        pool = POOLS[impl](processes, initializer, initargs, maxtasksperchild, context=ctx)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
        pool.join()


# ---------------------------------------------------------------- apply, apply_async


def test_apply(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    assert pool.apply(square, (7,)) == 49
    assert pool.apply(add, (1,), {"b": 2}) == 3
    assert pool.apply(add, kwds={"a": 4, "b": 5}) == 9
    assert pool.apply(add, args=[6]) == 6
    assert pool.apply(pid_of) != os.getpid()


def test_apply_async_callbacks(make_pool: Callable[..., Any], manager: Any) -> None:
    """Callbacks run in the parent, on one thread that is not the caller's, in
    completion order (not submission order), before ``get`` returns."""
    pool = make_pool()
    seen: list[tuple[str, Any, int, int]] = []

    def on_result(value: Any) -> None:
        seen.append(("result", value, os.getpid(), threading.get_ident()))

    def on_error(exc: BaseException) -> None:
        seen.append(("error", exc, os.getpid(), threading.get_ident()))

    release = manager.Event()
    slow = pool.apply_async(wait_event, (release,), {"value": "slow"}, on_result, on_error)
    fast = pool.apply_async(add, (1,), {"b": 2}, callback=on_result, error_callback=on_error)
    assert fast.get(GET) == 3
    failing = pool.apply_async(
        raise_error, (CustomError, "bad"), callback=on_result, error_callback=on_error
    )
    with pytest.raises(CustomError, match="bad"):
        failing.get(GET)
    release.set()
    assert slow.get(GET) == "slow"

    kinds = [(kind, type(value) if kind == "error" else value) for kind, value, _, _ in seen]
    assert kinds == [("result", 3), ("error", CustomError), ("result", "slow")]
    assert {pid for _, _, pid, _ in seen} == {os.getpid()}
    threads = {ident for _, _, _, ident in seen}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


# ---------------------------------------------------------------------- map family


def test_map_and_starmap(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    expected = [x * x for x in range(30)]
    assert pool.map(square, range(30)) == expected
    assert pool.map(square, range(30), chunksize=4) == expected
    assert pool.map(square, range(30), 1) == expected
    assert pool.map(square, (x for x in range(30))) == expected
    assert pool.map(square, []) == []
    assert pool.map_async(square, []).get(GET) == []

    lists: list[list[int]] = []
    result = pool.map_async(square, range(10), callback=lists.append)
    assert result.get(GET) == expected[:10]
    assert lists == [expected[:10]]
    assert result.ready() and result.successful()

    errors: list[BaseException] = []
    result = pool.map_async(
        fail_on_three, range(10), 2, callback=lists.append, error_callback=errors.append
    )
    with pytest.raises(ValueError, match="three"):
        result.get(GET)
    assert not result.successful()
    assert [type(e) for e in errors] == [ValueError]
    assert len(lists) == 1  # no result callback for a failed map
    with pytest.raises(ValueError, match="three"):
        pool.map(fail_on_three, range(10))

    pairs = [(i, 10 * i) for i in range(12)]
    sums = [a + b for a, b in pairs]
    assert pool.starmap(add, pairs) == sums
    assert pool.starmap(add, iter(pairs), chunksize=5) == sums
    assert pool.starmap(add, []) == []
    result = pool.starmap_async(add, pairs, callback=lists.append)
    assert result.get(GET) == sums
    assert lists[-1] == sums
    with pytest.raises(TypeError):
        pool.starmap(add, [(1, 2, 3)])  # add takes at most two arguments
    errors.clear()
    result = pool.starmap_async(raise_error, [(KeyError, "k")], error_callback=errors.append)
    with pytest.raises(KeyError):
        result.get(GET)
    assert [type(e) for e in errors] == [KeyError]


# -------------------------------------------------------------------- imap family


def test_imap_and_imap_unordered(make_pool: Callable[..., Any], manager: Any) -> None:
    pool = make_pool()
    # Ordered: item 1 is finished (``done``) while item 0 still waits for ``release``;
    # imap must hold item 1 back until item 0 is there.
    release, done = manager.Event(), manager.Event()
    it = pool.imap(imap_gate, [(0, release, done), (1, release, done)])
    assert done.wait(GET)
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=SHORT)
    release.set()
    assert list(it) == [0, 1]

    # Unordered: item 1 comes first, then next(timeout) times out until item 0 is free.
    release, done = manager.Event(), manager.Event()
    it = pool.imap_unordered(imap_gate, [(0, release, done), (1, release, done)])
    assert it.next(timeout=GET) == 1
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=SHORT)
    release.set()
    assert it.next(timeout=GET) == 0
    with pytest.raises(StopIteration):
        it.next(timeout=GET)

    expected = [x * x for x in range(25)]
    assert list(pool.imap(square, range(25))) == expected
    assert list(pool.imap(square, range(25), chunksize=4)) == expected
    assert list(pool.imap(square, (x for x in range(25)), 3)) == expected
    assert sorted(pool.imap_unordered(square, range(25))) == expected
    assert sorted(pool.imap_unordered(square, iter(range(25)), chunksize=6)) == expected
    assert list(pool.imap(square, [])) == []
    assert list(pool.imap_unordered(square, iter([]))) == []


def _failing_input() -> Iterator[int]:
    yield 1
    yield 2
    raise CustomError("the input failed")


def test_exceptions_keep_their_type(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    with pytest.raises(CustomError, match="boom"):
        pool.apply(raise_error, (CustomError, "boom"))
    with pytest.raises(KeyError):
        pool.apply_async(raise_error, (KeyError, "key")).get(GET)
    with pytest.raises(ZeroDivisionError):
        pool.apply(divmod, (1, 0))
    with pytest.raises(ValueError, match="three"):
        pool.map(fail_on_three, range(8), chunksize=2)
    with pytest.raises(CustomError, match="input"):
        pool.map(square, _failing_input())

    # imap: the error surfaces at its position, and iteration goes on after it.
    it = pool.imap(fail_on_three, range(6))
    assert [next(it), next(it), next(it)] == [0, 1, 4]
    with pytest.raises(ValueError, match="three"):
        next(it)
    assert list(it) == [16, 25]
    # In chunks, the failing chunk raises after the results of the chunks before it.
    it = pool.imap(fail_on_three, range(6), chunksize=2)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match="three"):
        next(it)
    outcome = drain(pool.imap_unordered(fail_on_three, range(6)))
    assert outcome.count(ValueError) == 1
    assert sorted(x for x in outcome if x is not ValueError) == [0, 1, 4, 16, 25]
    # An input generator that raises: the results before it, then its error, then the end.
    assert drain(pool.imap(square, _failing_input())) == [1, 4, CustomError]


def test_large_arguments_and_results(make_pool: Callable[..., Any]) -> None:
    """Megabytes each way (procpool sends large buffers out of band)."""
    pool = make_pool()
    big = 8 * 1024 * 1024
    assert pool.apply(make_bytes, (big,)) == b"x" * big
    assert pool.apply(length, (b"y" * big,)) == big
    assert pool.map(length, [b"z" * (big // 4)] * 6) == [big // 4] * 6
    sizes = [big // 8, 5, big // 2]
    assert [len(x) for x in pool.imap(make_bytes, sizes)] == sizes


@fork_only
def test_callbacks_can_submit_more_work(make_pool: Callable[..., Any]) -> None:
    """A callback hands its result to a new task (the crawler pattern, chained)."""
    pool = make_pool()
    done = threading.Event()
    chained: list[int] = []

    def then_square_again(value: int) -> None:
        pool.apply_async(square, (value,), callback=finish)

    def finish(value: int) -> None:
        chained.append(value)
        done.set()

    pool.apply_async(square, (3,), callback=then_square_again)
    assert done.wait(GET)
    assert chained == [81]


# ------------------------------------------------------------------- AsyncResult


@fork_only
def test_async_result_states(make_pool: Callable[..., Any], manager: Any) -> None:
    pool = make_pool()
    release = manager.Event()
    result = pool.apply_async(wait_event, (release,))
    mapped = pool.map_async(wait_event, [release])
    for handle in (result, mapped):
        assert not handle.ready()
        with pytest.raises(ValueError):
            handle.successful()
        assert handle.wait(SHORT) is None
        assert not handle.ready()
        with pytest.raises(multiprocessing.TimeoutError):
            handle.get(timeout=SHORT)
    release.set()
    assert result.get(GET) == "released"
    assert mapped.get(GET) == ["released"]
    for handle in (result, mapped):
        handle.wait()
        assert handle.ready() and handle.successful()

    failed = pool.apply_async(raise_error, (CustomError, "x"))
    failed.wait(GET)
    assert failed.ready() and not failed.successful()
    with pytest.raises(CustomError):
        failed.get()


@fork_only
def test_get_returns_only_after_the_callback_ran(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    entered, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def callback(value: int) -> None:
        entered.set()
        release.wait(GET)
        ran.append(value)

    result = pool.apply_async(square, (3,), callback=callback)
    try:
        assert entered.wait(GET)
        # The value is in, but the callback has not returned: not ready yet.
        assert not result.ready()
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=SHORT)
    finally:
        release.set()
    assert result.get(GET) == 9
    assert ran == [9]


# --------------------------------------------------------------------- lifecycle


@fork_only
def test_close_and_join_rules(make_pool: Callable[..., Any]) -> None:
    pool = make_pool()
    with pytest.raises(ValueError):
        pool.join()  # still running
    queued = pool.apply_async(square, (4,))
    pool.close()
    calls: list[Callable[[], object]] = [
        lambda: pool.apply(square, (1,)),
        lambda: pool.apply_async(square, (1,)),
        lambda: pool.map(square, [1]),
        lambda: pool.map_async(square, [1]),
        lambda: pool.starmap(add, [(1, 2)]),
        lambda: pool.starmap_async(add, [(1, 2)]),
        lambda: pool.imap(square, [1]),
        lambda: pool.imap_unordered(square, [1]),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    pool.join()
    assert queued.get(GET) == 16  # close() lets queued work finish
    pool.close()  # all of these may be repeated
    pool.join()
    pool.terminate()
    pool.join()


@fork_only
def test_context_manager_exit_terminates(make_pool: Callable[..., Any], manager: Any) -> None:
    before = child_pids()
    started, release = manager.Event(), manager.Event()
    with make_pool() as pool:
        pool.apply_async(started_then_wait, (started, release))
        assert started.wait(GET)
        assert len(child_pids() - before) == 2
    # Every worker is gone (and reaped), the busy one included: terminate, not close.
    assert child_pids() - before == set()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))


@fork_only
def test_zero_processes_is_an_error(make_pool: Callable[..., Any]) -> None:
    for processes in (0, -1):
        with pytest.raises(ValueError):
            make_pool(processes)


@fork_only
def test_processes_default_to_cpu_count(make_pool: Callable[..., Any], manager: Any) -> None:
    cpus = os.cpu_count() or 1
    if len(os.sched_getaffinity(0)) != cpus:
        pytest.skip("this process's CPU affinity differs from os.cpu_count()")
    pool = make_pool(None)
    # cpus tasks that can only finish together: the pool must run cpus workers at once.
    barrier = manager.Barrier(cpus)
    pids = pool.map(barrier_pid, [barrier] * cpus, chunksize=1)
    assert len(set(pids)) == cpus


def _apply_from_threads(pool: Any, n: int, salt: int) -> list[object]:
    """``n`` threads call ``pool.apply`` at the same moment; their results in order."""
    start = threading.Barrier(n)
    results: list[object] = [None] * n

    def caller(i: int) -> None:
        try:
            start.wait(GET)
            results[i] = pool.apply(add, (i,), {"b": salt})
        except BaseException as exc:  # reported through ``results``
            results[i] = exc

    in_threads(caller, n)
    return results


@fork_only
def test_apply_from_many_threads(make_pool: Callable[..., Any]) -> None:
    """Threads that call ``apply`` at once each get their own result (the tutorial's
    way to run ``apply`` concurrently). Many short rounds: a submission lost to a race
    with the scheduler's wake-up (fixed in 1a1d2e4) showed within a few dozen."""
    pool = make_pool()
    n = 8
    for round_no in range(100):
        salt = 1000 * round_no
        assert _apply_from_threads(pool, n, salt) == [i + salt for i in range(n)]


# ------------------------------------------------------- initializer, worker reuse


def test_initializer_runs_once_per_worker(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(2, record_init, ("token",))
    reports = pool.map(init_report, range(20), chunksize=1)
    # Each worker ran the initializer exactly once, with initargs, before any task.
    assert {(calls, arg) for _, calls, arg in reports} == {(1, "token")}
    assert 1 <= len({pid for pid, _, _ in reports}) <= 2


def test_maxtasksperchild_replaces_workers(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(2, record_init, ("token",), maxtasksperchild=2)
    reports = pool.map(init_report, range(8), chunksize=1)
    tasks_per_pid = Counter(pid for pid, _, _ in reports)
    # No worker ran more than two tasks, so at least four took turns (the stdlib
    # sometimes retires a worker after fewer).
    assert max(tasks_per_pid.values()) <= 2
    assert len(tasks_per_pid) >= 4
    assert {(calls, arg) for _, calls, arg in reports} == {(1, "token")}


def test_initargs_can_carry_synchronization_primitives(
    make_pool: Callable[..., Any], start_method: str
) -> None:
    """Event and Lock cross only by inheritance, which initargs are (the usual way to
    hand a worker a lock or an event)."""
    ctx = multiprocessing.get_context(start_method)
    event, lock = ctx.Event(), ctx.Lock()
    pool = make_pool(2, record_init, ((event, lock),))
    assert pool.apply(use_inherited) is True
    assert event.is_set()


# -------------------------------- stdlib semantics procpool once broke (regressions)


#: Pool methods whose stdlib signature procpool copies (its extras are keyword-only).
SIGNATURE_METHODS = [
    "__init__",
    "apply",
    "apply_async",
    "map",
    "map_async",
    "starmap",
    "starmap_async",
    "imap",
    "imap_unordered",
    "close",
    "terminate",
    "join",
]


def _positional(method: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of the parameters a caller may pass by position."""
    params = []
    for param in inspect.signature(method).parameters.values():
        if param.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD):
            continue  # procpool's extras, by keyword only
        default = param.default
        if param.name == "kwds" and default in ({}, None):
            default = "no keyword arguments"  # the stdlib's {} and procpool's None agree
        params.append((param.name, param.kind, default))
    return params


@pytest.mark.parametrize("name", SIGNATURE_METHODS)
def test_signatures_match_the_stdlib(name: str) -> None:
    """Same parameter names, order, kinds and defaults; procpool's extras come after a
    ``*``, so no stdlib call (positional or by keyword) means something else."""
    stdlib = getattr(multiprocessing.pool.Pool, name)
    ours = getattr(procpool.Pool, name)
    assert _positional(ours) == _positional(stdlib)


@fork_only
def test_imap_default_chunksize_fails_only_the_failing_item(
    make_pool: Callable[..., Any],
) -> None:
    """An error deep into a long imap raises at its own position and every other
    result still comes (an adaptive default chunk size lost the rest of the failing
    chunk; fixed in 3e46531: the default is 1, as in the stdlib)."""
    pool = make_pool()
    expected: list[Any] = list(range(6000))
    expected[3000] = ValueError
    assert drain(pool.imap(fail_at_3000, range(6000))) == expected


@fork_only
def test_queued_tasks_run_while_other_workers_are_busy(
    make_pool: Callable[..., Any], manager: Any
) -> None:
    """While three of four workers run long tasks, the fourth runs everything queued
    (the stdlib's workers pull from one queue). Calls prefetched behind a long one
    waited for it until work stealing (3e46531); forty rounds, because the stealing
    then lost the calls it handed back in about one round in three (fixed in 6d6e61f:
    nothing is queued behind a call past the steal threshold)."""
    workers = 4
    pool = make_pool(workers)
    expected = [x * x for x in range(300)]
    assert pool.map(square, range(300), chunksize=1) == expected
    gates = [(manager.Event(), manager.Event()) for _ in range(workers - 1)]
    for _ in range(40):
        for started, release in gates:
            started.clear()
            release.clear()
        busy = [pool.apply_async(started_then_wait, gate) for gate in gates]
        try:
            for started, _ in gates:
                assert started.wait(GET)
            # The last worker is free for the whole map; GET is only a deadlock detector.
            assert pool.map_async(square, range(300), chunksize=1).get(GET / 2) == expected
        finally:
            for _, release in gates:
                release.set()
        assert len({handle.get(GET) for handle in busy}) == workers - 1


@fork_only
def test_queued_tasks_run_while_a_worker_unpickles_a_slow_argument(
    make_pool: Callable[..., Any], manager: Any
) -> None:
    """The same while the long task's arguments take half a second to unpickle (the
    steal signal that landed before the call started was ignored; fixed in 2d4d6e3)."""
    pool = make_pool(2)
    expected = [x * x for x in range(200)]
    assert pool.map(square, range(200), chunksize=1) == expected
    release = manager.Event()
    busy = pool.apply_async(hold, (release, SlowToUnpickle()))
    try:
        # The other worker is free for the whole map; GET is only a deadlock detector.
        assert pool.map_async(square, range(200), chunksize=1).get(GET / 2) == expected
    finally:
        release.set()
    assert busy.get(GET) == "released"


@fork_only
def test_imap_results_can_be_consumed_after_close(make_pool: Callable[..., Any]) -> None:
    """close() then iterate (a lazily fed imap raised ValueError('Pool not running')
    at its next refill; fixed in 3e46531)."""
    pool = make_pool(2)
    it = pool.imap(square, range(1000))
    pool.close()
    assert list(it) == [x * x for x in range(1000)]
    pool.join()


# ===================================================================================
# procpool only: what procpool adds on top of the stdlib
# ===================================================================================


@pytest.fixture
def pp(start_method: str) -> Iterator[procpool.Pool]:
    """A two-worker procpool.Pool, terminated at teardown."""
    pool = procpool.Pool(2, context=start_method)
    yield pool
    pool.terminate()


@fork_only
def test_worker_traceback_is_the_cause(pp: procpool.Pool) -> None:
    with pytest.raises(CustomError, match="raised in the worker") as info:
        pp.apply(raise_in_named_function)
    cause = info.value.__cause__
    assert isinstance(cause, procpool.RemoteTraceback)
    assert "raise_in_named_function" in cause.tb
    assert 'raise CustomError("raised in the worker")' in cause.tb
    assert "raise_in_named_function" in str(cause)

    with pytest.raises(ValueError) as map_info:
        pp.map(fail_on_three, range(5))
    assert isinstance(map_info.value.__cause__, procpool.RemoteTraceback)
    assert "fail_on_three" in map_info.value.__cause__.tb


@fork_only
def test_get_timeout_is_also_a_builtin_timeout_error(pp: procpool.Pool, manager: Any) -> None:
    release = manager.Event()
    result = pp.apply_async(wait_event, (release,))
    it = pp.imap(wait_event, [release])
    try:
        for wait in (lambda: result.get(timeout=SHORT), lambda: it.next(timeout=SHORT)):
            for kind in (multiprocessing.TimeoutError, TimeoutError, procpool.GetTimeoutError):
                try:
                    wait()
                except kind:
                    pass
                else:
                    pytest.fail(f"no {kind.__name__} raised")
    finally:
        release.set()
    assert result.get(GET) == "released"
    assert list(it) == ["released"]


def test_lambdas_and_closures(pp: procpool.Pool) -> None:
    offset = 10

    def shifted(x: int) -> int:
        return x + offset

    assert pp.apply(lambda: 42) == 42
    assert pp.apply(lambda a, b=0: a * b, (6,), {"b": 7}) == 42
    assert pp.map(lambda x: x * 2, range(5)) == [0, 2, 4, 6, 8]
    assert pp.map(shifted, range(5), chunksize=2) == [10, 11, 12, 13, 14]
    assert list(pp.imap(shifted, range(3))) == [10, 11, 12]
    assert sorted(pp.imap_unordered(lambda x: -x, range(3))) == [-2, -1, 0]
    assert pp.starmap(lambda a, b: a * b, [(2, 3), (4, 5)]) == [6, 20]


def test_results_that_need_cloudpickle(start_method: str) -> None:
    """A worker pickles a result by value (a function made in the task). A forked
    worker once inherited the parent's cloudpickle import lock as held, and hung on
    its first such result."""
    with procpool.Pool(2, context=start_method) as pool:
        made = pool.apply(make_adder, (5,))
        assert made(1) == 6
        assert [f(1) for f in pool.map(make_adder, range(3))] == [1, 2, 3]


@fork_only
def test_progress_bars(
    pp: procpool.Pool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # tqdm starts a monitor thread with its first bar and (as of tqdm 4.70) never ends
    # it; tqdm's documented switch turns it off so the leak check stays meaningful.
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    expected = [x * x for x in range(20)]
    assert pp.map(square, range(20), progress=True) == expected
    bar = capsys.readouterr().err
    assert "100%" in bar and "20/20" in bar
    assert list(pp.imap(square, range(20), progress=True)) == expected
    bar = capsys.readouterr().err
    assert "100%" in bar and "20/20" in bar
    assert sorted(pp.imap_unordered(square, range(20), progress=True)) == expected
    assert "20/20" in capsys.readouterr().err


@fork_only
def test_imap_reads_an_endless_input_lazily(pp: procpool.Pool) -> None:
    """imap over ``itertools.count()``: results come, and only a bounded window of the
    input has been read, however much is consumed (the stdlib's task thread would read
    the endless input into memory)."""
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled = i + 1
            yield i

    # Read-ahead allowed beyond what was consumed, in items: the window of chunks.
    bound = pp._processes * procpool._api.pool._DEFAULT_WINDOW_PER_WORKER
    it = pp.imap(square, numbers(), chunksize=1)
    assert list(itertools.islice(it, 20)) == [x * x for x in range(20)]
    assert 20 <= pulled <= 20 + bound
    assert list(itertools.islice(it, 4000)) == [x * x for x in range(20, 4020)]
    assert 4020 <= pulled <= 4020 + bound

    # Adaptive chunks (chunksize=None) grow to at most 4096 items, in a short window
    # of chunks: the read-ahead stays bounded however long the input runs.
    pulled = 0
    adaptive = pp.imap(square, numbers(), chunksize=None)
    assert list(itertools.islice(adaptive, 50_000)) == [x * x for x in range(50_000)]
    assert 50_000 <= pulled <= 50_000 + 16 * 4096

    pulled = 0
    chunksize = 5
    unordered = pp.imap_unordered(square, numbers(), chunksize)
    assert len(list(itertools.islice(unordered, 500))) == 500
    assert 500 <= pulled <= 500 + chunksize * bound


@fork_only
def test_a_failing_callback_is_logged_and_the_pool_goes_on(
    pp: procpool.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("callback failed")

    with caplog.at_level(logging.ERROR, logger="procpool"):
        result = pp.apply_async(square, (3,), callback=broken)
        assert result.get(GET) == 9  # the task's own value is intact
        assert isinstance(result.callback_error, RuntimeError)
        failed = pp.apply_async(raise_error, (CustomError, "x"), error_callback=broken)
        with pytest.raises(CustomError):
            failed.get(GET)
        mapped = pp.map_async(square, range(4), callback=broken)
        assert mapped.get(GET) == [0, 1, 4, 9]

        later: list[int] = []
        assert pp.apply_async(square, (5,), callback=later.append).get(GET) == 25
        assert later == [25]
        assert pp.map(square, range(10)) == [x * x for x in range(10)]

    records = [r for r in caplog.records if r.name == "procpool"]
    assert len(records) == 3
    for record in records:
        assert record.levelno == logging.ERROR
        assert "callback" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_exit_cancels_unfinished_tasks(manager: Any) -> None:
    """Where the stdlib leaves get() hanging forever after terminate, procpool says why."""
    started, release = manager.Event(), manager.Event()
    with procpool.Pool(2, context="fork") as pool:
        running = pool.apply_async(started_then_wait, (started, release))
        assert started.wait(GET)
    with pytest.raises(procpool.CancelledError):
        running.get(GET)
    assert running.cancelled()


_PLAIN_VALUES: list[object] = [
    None, True, False, 0, -1, 2**70, -(2**100), 1.5, float("inf"), -0.0, 3 - 4j,
    "", "héllo ✓", "\ud800 lone surrogate", [1, "a", None], (2.5, False), [],
]


def test_plain_values_cross_with_their_exact_types(pp: procpool.Pool) -> None:
    """Plain values (numbers, strings, None, short lists and tuples of them) travel as
    marshal data, not pickles: they come back equal and of the same type both ways
    (a bool stays a bool, a tuple a tuple), in calls, results, maps and imaps."""
    for value in _PLAIN_VALUES:
        assert pp.apply(identity, (value,)) == value
        back = pp.apply_async(identity, (value,)).get(GET)
        assert type(back) is type(value) and back == value
        assert pp.apply(types_and_value, (value, value)) == ((type(value).__name__, value),) * 2
    assert pp.map(identity, _PLAIN_VALUES, chunksize=3) == _PLAIN_VALUES
    assert list(pp.imap(identity, _PLAIN_VALUES, chunksize=1)) == _PLAIN_VALUES
    assert pp.apply(types_and_value, (1,), {"b": True}) == (("int", 1), ("bool", True))
