"""Issue 3: never hang, never lose a task.

The crash matrix (crash, exit or raise at each stage a call goes through), worker
death, time limits, cancellation, retries, recycling, BaseException, a failing
initializer, Ctrl-C and the death of the parent. Every case checks the error type and
message, that the other tasks completed, and that the pool still answers.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError
from pathlib import Path

import pytest

import fault_funcs as ff
import procpool
from proc_utils import GET, TESTS, calls_racing_with_kills, still_alive_after
from procpool import (
    CancelledError,
    PoolBrokenError,
    SerializationError,
    TaskTimeoutError,
    WorkerLostError,
)

SIGNAL_OF = {"sigkill": "SIGKILL", "segfault": "SIGSEGV"}


def _check_lost(err: BaseException, action: str) -> None:
    assert isinstance(err, WorkerLostError)
    assert isinstance(err, procpool.ProcpoolError)
    assert isinstance(err, BrokenProcessPool)
    if action == "exit":
        assert err.exitcode == 7 and "exited with code 7" in str(err)
    else:
        assert err.signal == SIGNAL_OF[action] and SIGNAL_OF[action] in str(err)
    assert err.pid is not None and str(err.pid) in str(err)


def _neighbours(pool: procpool.Pool) -> list[procpool.AsyncResult[int]]:
    return [pool.apply_async(ff.square, (i,)) for i in range(8)]


def _assert_healthy(pool: procpool.Pool, neighbours: list[procpool.AsyncResult[int]]) -> None:
    assert [r.get(timeout=30) for r in neighbours] == [i * i for i in range(8)] * (
        len(neighbours) // 8
    )
    assert pool.apply(ff.square, (12,)) == 144
    assert pool.map(ff.square, range(30)) == [i * i for i in range(30)]


@pytest.mark.parametrize("action", ff.ACTIONS)
@pytest.mark.parametrize("stage", ["unpickle task", "run", "pickle result"])
def test_crash_matrix_in_worker(start_method: str, stage: str, action: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        before = _neighbours(pool)
        if stage == "unpickle task":
            bad = pool.apply_async(ff.identity, (ff.Trap(action, "unpickle"),))
        elif stage == "run":
            bad = pool.apply_async(ff.run_action, (action,))
        else:
            bad = pool.apply_async(ff.make_trap, (action, "pickle"))
        after = _neighbours(pool)
        with pytest.raises(BaseException) as info:
            bad.get(timeout=30)
        err = info.value
        if action != "raise":
            _check_lost(err, action)
        elif stage == "run":
            assert type(err) is ff.TrapError and "trap sprung" in str(err)
            assert isinstance(err.__cause__, procpool.RemoteTraceback)
            assert "run_action" in str(err.__cause__)
        elif stage == "unpickle task":  # the stdlib: BrokenProcessPool (and a hang)
            assert isinstance(err, SerializationError) and isinstance(err, BrokenProcessPool)
            assert err.stage == stage and "trap sprung" in str(err)
        else:  # as multiprocessing.Pool: the pickling error, wrapped
            assert isinstance(err, MaybeEncodingError)
            assert "trap sprung" in err.exc and "Trap object" in err.value
            assert type(err.__cause__) is ff.TrapError
            assert "the result of fault_funcs.make_trap" in err.__cause__.__notes__[-1]
        _assert_healthy(pool, before + after)


def test_crash_matrix_in_parent(start_method: str) -> None:
    """Pickling the call and unpickling the result happen in the parent: raise only.

    (A crash there is a crash of the parent process itself; nothing survives that.)
    """
    with procpool.Pool(2, context=start_method) as pool:
        before = _neighbours(pool)
        errors: list[BaseException] = []
        # As the stdlib: the pickler's own error, from get(), not from apply_async.
        bad = pool.apply_async(
            ff.identity, (1, ff.Trap("raise", "pickle")), error_callback=errors.append
        )
        with pytest.raises(ff.TrapError) as info:
            bad.get(timeout=30)
        assert "argument 1 of the call (Trap object)" in info.value.__notes__[-1]
        assert errors == [info.value]  # the error_callback ran before get() returned
        bad = pool.apply_async(ff.make_trap, ("raise", "unpickle"))
        with pytest.raises(SerializationError) as info:
            bad.get(timeout=30)
        assert isinstance(info.value, BrokenProcessPool)
        assert info.value.stage == "unpickle result" and "trap sprung" in str(info.value)
        _assert_healthy(pool, before)


def test_dead_worker_in_map_fails_its_chunk_only(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        it = pool.imap(ff.run_action, ["sigkill"], chunksize=1)
        with pytest.raises(WorkerLostError):
            next(it)
        assert pool.map(ff.square, range(100), chunksize=7) == [i * i for i in range(100)]


def test_calls_sent_to_a_worker_that_died_before_reading_them_run_elsewhere(
    start_method: str,
) -> None:
    """A worker stopped (so it reads nothing), handed calls, then killed: it never
    started them, so they run on the other worker instead of failing."""
    with procpool.Pool(2, context=start_method) as pool:
        assert pool.map(ff.square, range(4), chunksize=1) == [0, 1, 4, 9]
        victim = pool.worker_pids[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            _wait_until_stopped(victim)
            results = [pool.apply_async(ff.square, (i,)) for i in range(40)]
        finally:
            os.kill(victim, signal.SIGKILL)  # (a stopped process dies of it at once)
        assert [r.get(timeout=30) for r in results] == [i * i for i in range(40)]
        assert pool.map(ff.square, range(4), chunksize=1) == [0, 1, 4, 9]


def _wait_until_stopped(pid: int) -> None:
    """Until /proc says ``pid`` is stopped (SIGSTOP is delivered asynchronously)."""
    for _ in range(1_000_000):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
    raise AssertionError(f"worker {pid} did not stop")


def test_task_timeout_stops_the_task_and_replaces_the_worker(start_method: str) -> None:
    with procpool.Pool(1, context=start_method, task_timeout=0.2) as pool:
        (pid,) = pool.worker_pids
        queued = pool.apply_async(ff.square, (5,), task_timeout=None)
        slow = pool.apply_async(ff.sleep_forever)
        behind = pool.apply_async(ff.square, (6,))
        with pytest.raises(TaskTimeoutError) as info:
            slow.get(timeout=30)
        err = info.value
        assert isinstance(err, TimeoutError) and isinstance(err, multiprocessing.TimeoutError)
        assert "0.2s" in str(err) and "sleep_forever" in str(err)
        assert queued.get(timeout=30) == 25 and behind.get(timeout=30) == 36
        assert pool.worker_pids != [pid]


def test_per_call_timeout_on_imap_chunks(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        results = pool.imap(ff.run_or_square, [1, "block", 3], task_timeout=0.3)
        assert next(results) == 1
        with pytest.raises(TaskTimeoutError):
            next(results)
        assert next(results) == 9


def test_cancel_pending_and_running(start_method: str) -> None:
    ctx = multiprocessing.get_context(start_method)
    started = ctx.Event()
    with procpool.Pool(
        1, context=start_method, initializer=ff.init_started, initargs=(started,)
    ) as pool:
        (pid,) = pool.worker_pids
        running = pool.apply_async(ff.signal_then_block)
        pending = pool.apply_async(ff.square, (3,))
        assert started.wait(30)
        assert pending.cancel() is True
        assert running.cancel() is True
        for result in (pending, running):
            with pytest.raises(CancelledError):
                result.get(timeout=5)
            assert result.cancelled() and result.ready()
        assert pool.apply(ff.square, (4,)) == 16
        assert pool.worker_pids != [pid]
        done = pool.apply_async(ff.square, (2,))
        assert done.get(timeout=30) == 4
        assert done.cancel() is False


def test_retries_rerun_a_task_whose_worker_died(start_method: str, tmp_path: Path) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        marker = str(tmp_path / "first")
        assert pool.apply(ff.kill_once, (marker,), retries=1) == "survived"
        with pytest.raises(WorkerLostError):
            pool.apply(ff.kill_once, (str(tmp_path / "second"),))


def test_normal_exceptions_are_never_retried(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    with procpool.Pool(2, retries=3) as pool, pytest.raises(ValueError, match="never retried"):
        pool.apply(ff.count_and_raise, (str(counter),))
    assert counter.read_text() == "x"


def test_maxtasksperchild_recycles(start_method: str) -> None:
    with procpool.Pool(1, maxtasksperchild=2, context=start_method) as pool:
        pids = [pool.apply(ff.getpid) for _ in range(6)]
        assert len(set(pids)) == 3
        assert pool.map(ff.getpid, range(4), chunksize=1).count(pids[0]) == 0


def test_max_memory_per_child_recycles() -> None:
    with procpool.Pool(1, context="spawn") as probe:
        _, baseline = probe.apply(ff.pid_and_rss)
    limit = baseline + 64 * 1024 * 1024
    with procpool.Pool(1, context="spawn", max_memory_per_child=limit) as pool:
        pid1, _ = pool.apply(ff.rss_after_growing, (16,))
        pid2, _ = pool.apply(ff.pid_and_rss)
        assert pid1 == pid2  # still under the limit
        pid3, rss = pool.apply(ff.rss_after_growing, (96,))
        assert rss > limit
        pid4, _ = pool.apply(ff.pid_and_rss)
        assert pid4 != pid3  # retired after the task that crossed the limit


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt"])
def test_base_exceptions_come_back_as_errors(start_method: str, kind: str) -> None:
    with procpool.Pool(1, context=start_method) as pool:
        with pytest.raises(BaseException) as info:
            pool.apply(ff.raise_base, (kind,))
        assert type(info.value).__name__ == kind
        assert pool.apply(ff.square, (3,)) == 9


def test_failing_initializer_breaks_the_pool_clearly(start_method: str) -> None:
    pool = procpool.Pool(2, context=start_method, initializer=ff.fail_init)
    try:
        result = pool.apply_async(ff.square, (2,))
        with pytest.raises(PoolBrokenError) as info:
            result.get(timeout=60)
        assert "broken on purpose" in str(info.value)
        with pytest.raises(PoolBrokenError):
            pool.apply_async(ff.square, (2,))
    finally:
        pool.terminate()


def test_callback_that_raises_does_not_stop_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    def bad_callback(_: object) -> None:
        raise RuntimeError("callback bug")

    with procpool.Pool(2) as pool:
        result = pool.apply_async(ff.square, (3,), callback=bad_callback)
        assert result.get(timeout=30) == 9
        assert isinstance(result.callback_error, RuntimeError)
        assert pool.apply(ff.square, (4,)) == 16
    assert "callback bug" in caplog.text


def test_dropped_pool_is_cleaned_up() -> None:
    pool = procpool.Pool(2)
    assert pool.apply(ff.square, (2,)) == 4
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()


def test_terminate_ends_long_tasks_quickly(start_method: str) -> None:
    pool = procpool.Pool(2, context=start_method)
    results = [pool.apply_async(ff.sleep_forever) for _ in range(4)]
    pool.terminate()
    pool.join()
    for result in results:
        with pytest.raises(CancelledError, match="terminated"):
            result.get(timeout=5)


@pytest.mark.parametrize("ending", ["close", "terminate"])
def test_apply_async_racing_the_end_of_the_pool_never_strands_a_task(ending: str) -> None:
    """A call that races close() or terminate() from another thread either raises at
    once or gets a handle that settles (after close: with its value)."""
    for _ in range(10):
        _race_the_end(ending)


def _race_the_end(ending: str) -> None:
    pool = procpool.Pool(2)
    handles: list[list[procpool.AsyncResult[int]]] = [[] for _ in range(3)]
    refused: list[BaseException | None] = [None] * 3
    submitted = [threading.Event() for _ in range(3)]

    def submit(i: int) -> None:
        try:
            while True:
                handles[i].append(pool.apply_async(ff.square, (len(handles[i]),)))
                if len(handles[i]) == 20:
                    submitted[i].set()
        except ValueError as exc:  # "Pool not running": the end
            refused[i] = exc
        finally:
            submitted[i].set()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for event in submitted:
        event.wait(GET)
    getattr(pool, ending)()
    for thread in threads:
        thread.join(GET)
    pool.join()
    assert all(isinstance(exc, ValueError) for exc in refused)
    for mine in handles:
        for n, handle in enumerate(mine):
            handle.wait(GET)
            assert handle.ready(), "a task submitted during the pool's end never settled"
            if ending == "close":
                assert handle.get() == n * n
            elif not handle.successful():
                with pytest.raises(CancelledError, match="terminated"):
                    handle.get()


_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import procpool
    import fault_funcs as ff

    if __name__ == "__main__":
        import multiprocessing
        started = multiprocessing.get_context(sys.argv[1]).Event()
        pool = procpool.Pool(2, context=sys.argv[1], initializer=ff.init_started,
                             initargs=(started,))

        def announce():
            started.wait()
            print(*pool.worker_pids, flush=True)

        threading.Thread(target=announce, daemon=True).start()
        try:
            pool.map(ff.signal_then_block_item, range(4), chunksize=1)
        finally:
            if sys.argv[2] == "close":
                pool.close()
                pool.join()
                print("JOINED", flush=True)
    """
)


def _run_script(
    tmp_path: Path, start_method: str, mode: str
) -> tuple[subprocess.Popen[str], list[int]]:
    script = tmp_path / "pool_script.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2, proc.stderr.read() if proc.stderr else ""
    return proc, pids


@pytest.mark.timeout(60)
def test_ctrl_c_cancels_and_close_join_returns(start_method: str, tmp_path: Path) -> None:
    proc, pids = _run_script(tmp_path, start_method, "close")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert "JOINED" in out
    assert "KeyboardInterrupt" in err
    assert still_alive_after(pids, 5) == []


@pytest.mark.timeout(60)
def test_parent_sigkill_leaves_no_orphans(start_method: str, tmp_path: Path) -> None:
    proc, pids = _run_script(tmp_path, start_method, "none")
    proc.kill()
    proc.communicate(timeout=20)
    assert still_alive_after(pids, 1.0) == []


def test_workers_keep_default_sigterm_whatever_the_parent_installed() -> None:
    """A forked worker must not inherit a parent's SIGTERM handler: time limits,
    cancel and terminate stop workers with SIGTERM."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with procpool.Pool(1, context="fork") as pool:
            assert pool.apply(ff.sigterm_handler_name) == "default"
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("limit", [float("inf"), 1e10])
def test_huge_time_limits_mean_no_limit(limit: float) -> None:
    with procpool.Pool(1, task_timeout=limit) as pool:
        assert pool.apply(ff.square, (3,)) == 9
        assert pool.apply(ff.square, (4,), task_timeout=limit) == 16


@pytest.mark.parametrize("action", ff.ACTIONS)
def test_blocking_apply_direct_path_survives_crashes(start_method: str, action: str) -> None:
    """A lone blocking apply runs on a worker lent to the caller; a crash there is
    handed back to the scheduler and fails only that call."""
    with procpool.Pool(1, context=start_method) as pool:
        assert pool.apply(ff.square, (3,)) == 9
        with pytest.raises(BaseException) as info:
            pool.apply(ff.run_action, (action,))
        if action == "raise":
            assert type(info.value) is ff.TrapError
        else:
            _check_lost(info.value, action)
        assert [pool.apply(ff.square, (i,)) for i in range(20)] == [i * i for i in range(20)]


def test_blocking_apply_from_threads_while_workers_die() -> None:
    """Many threads calling apply at once, some calls killing their worker: every
    call ends with its result or WorkerLostError, and nothing hangs."""
    with procpool.Pool(2) as pool:
        outcomes = calls_racing_with_kills(
            lambda x: pool.apply(ff.square, (x,)),
            lambda: pool.apply(ff.run_action, ("sigkill",)),
            WorkerLostError,
        )
    assert len(outcomes) == 120
    assert outcomes.count("lost") == 12 and outcomes.count(True) == 108


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("pays", [True, False])
def test_a_blocking_apply_watches_for_its_answer_only_while_that_pays(
    monkeypatch: pytest.MonkeyPatch, pays: bool
) -> None:
    """Calls that take longer than a watch (1 ms here): the caller of a lent call
    watches the pipe before sleeping while the answer keeps arriving during the watch;
    after two misses it sleeps at once and watches again one call in 16. (Watching
    used to depend on the measured service time only, which a sleeping caller inflates
    with its own wake-up: a pool of short calls could stay stuck at ~220 µs a call.)"""
    from procpool._engine import lending

    watches: list[int] = []

    def fake_spin(poller: object, until: float) -> bool:
        watches.append(1)
        return pays

    with procpool.Pool(1, context="fork") as pool:
        assert pool.apply(ff.slow_square, (2,)) == 4  # the worker is up
        monkeypatch.setattr(lending, "spin", fake_spin)
        lender = pool._engine._lender
        lender.spin_credit, lender.direct_calls = lending._SPIN_CREDIT, 0
        for i in range(48):
            assert pool.apply(ff.slow_square, (i,)) == i * i
        direct = lender.direct_calls
    assert direct >= 40  # (nearly) every call went to the lent worker
    assert len(watches) == (direct if pays else 2 + direct // 16)


def test_workers_do_not_spin_once_the_caller_stops() -> None:
    """A blocking apply in a loop makes the worker poll its pipe for a moment after
    each answer (the next call usually comes at once). Once calls stop coming, the
    worker must sleep: an idle pool burns no CPU. (Half a second of idleness is what
    is measured here, not a synchronisation.)"""
    import threading

    with procpool.Pool(2, context="fork") as pool:
        for i in range(300):
            assert pool.apply(ff.square, (i,)) == i * i
        pids = pool.worker_pids
        before = [_cpu_seconds(pid) for pid in pids]
        threading.Event().wait(0.5)
        used = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    assert max(used) < 0.1, used
