"""Issue 12, items 8 and 9: nothing outlives the interpreter, and no fork is taken
from a multi-threaded process to replace a worker.

The interpreter-exit tests run a child interpreter: it starts pools and executors in
the ways CPython's tests leave them (dropped, left open, shut down with
``wait=False``, a call still running), prints every process it started, and returns
from its main; it must then be gone within 5 s, and so must every one of those
processes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import procpool
from proc_utils import GET, still_alive_after

# The child interpreter's program: argv[1] is the start method. It prints the pids of
# every worker (and of the fork zygote) it started, then "exiting".
_EXIT_PROGRAM = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import sys
    import time

    import procpool

    def pids(engine):
        found = list(engine.worker_pids())
        zygote = getattr(engine, "_zygote", None)
        if zygote is not None and zygote.pid is not None:
            found.append(zygote.pid)
        return found

    def main():
        ctx = mp.get_context(sys.argv[1])
        started = []
        # A pool left open, with a call running.
        pool = procpool.Pool(2, context=ctx)
        pool.apply_async(time.sleep, (0.2,))
        started += pids(pool._engine)
        # A pool dropped at once (its result was taken).
        dropped = procpool.Pool(2, context=ctx)
        started += pids(dropped._engine)
        assert dropped.map(abs, [-1, -2]) == [1, 2]
        del dropped
        # An executor shut down without waiting, a call still running.
        nowait = procpool.Executor(2, mp_context=ctx)
        nowait.submit(time.sleep, 0.2)
        nowait.submit(os.getpid).result()
        started += pids(nowait._engine)
        nowait.shutdown(wait=False)
        # An executor dropped with a call running.
        gone = procpool.Executor(2, mp_context=ctx)
        gone.submit(time.sleep, 0.2)
        gone.submit(os.getpid).result()
        started += pids(gone._engine)
        del gone
        # An executor left open.
        left = procpool.Executor(2, mp_context=ctx)
        left.submit(os.getpid).result()
        started += pids(left._engine)
        print(" ".join(map(str, sorted(set(started)))), flush=True)
        print("exiting", flush=True)

    if __name__ == "__main__":
        main()
    """
)

# Replaces workers of a fork pool (one retires after each call, one is killed in the
# middle of a call) and prints the parent of a replacement, the zygote's pid and its
# own, then "done".
_REPLACE_PROGRAM = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import signal
    import time

    import procpool

    def report_then_sleep(fd):
        os.write(fd, os.getpid().to_bytes(4, "little"))
        time.sleep(60)

    def main():
        started_r, started_w = os.pipe()
        with procpool.Pool(1, context=mp.get_context("fork"), maxtasksperchild=1) as pool:
            pool.apply(os.getpid)  # that worker retires: a replacement starts
            parent = pool.apply(os.getppid)
            result = pool.apply_async(report_then_sleep, (started_w,))
            os.kill(int.from_bytes(os.read(started_r, 4), "little"), signal.SIGKILL)
            try:
                result.get(30)
            except procpool.WorkerLostError:
                pass
            assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
            print(parent, pool._engine._workers.zygote.pid, os.getpid(), flush=True)
        print("done", flush=True)

    if __name__ == "__main__":
        main()
    """
)


def _run_child(program: str, *args: str, warn: str = "error") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", warn, "-c", program, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_interpreter_exits_with_no_thread_or_worker_left(start_method: str) -> None:
    with _run_child(_EXIT_PROGRAM, start_method, warn="ignore::ResourceWarning") as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            pids = [int(p) for p in child.stdout.readline().split()]
            exiting = child.stdout.readline()
            # From the end of main: the exit hooks wind everything down (issue 12: 5 s).
            code = child.wait(timeout=5)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr = child.stderr.read()
    assert exiting == "exiting\n", stderr
    assert code == 0, stderr
    assert len(pids) >= 5, stderr  # a worker each at least
    assert still_alive_after(pids, GET) == []
    assert "Traceback" not in stderr, stderr


def test_replacement_workers_come_from_a_single_threaded_zygote() -> None:
    # "-W error" would hide it: CPython clears the warning's exception after a fork
    # (PyErr_Clear), so a warning is only seen when it is printed.
    with _run_child(_REPLACE_PROGRAM, warn="always::DeprecationWarning") as child:
        try:
            out, err = child.communicate(timeout=GET * 3)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 0, err
    assert "multi-threaded" not in err, err
    assert "DeprecationWarning" not in err, err
    parent, zygote, me = map(int, out.split("\n")[0].split())
    assert parent == zygote != me
    assert out.split("\n")[1] == "done"


def test_zygote_is_one_thread_and_ends_with_the_pool() -> None:
    pool = procpool.Pool(1, maxtasksperchild=1, context=_fork())
    try:
        first = pool.apply(os.getpid)  # retires: the zygote forks the next one
        second = pool.apply(os.getpid)
        assert second != first
        zygote = pool._engine._workers.zygote
        assert zygote is not None and zygote.pid is not None
        with open(f"/proc/{zygote.pid}/status") as f:
            threads = [line for line in f if line.startswith("Threads:")]
        assert threads == ["Threads:\t1\n"]
        # Not this process's child: it never shows among the pool's children.
        with open(f"/proc/{zygote.pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
    finally:
        pool.terminate()
        pool.join()
    assert still_alive_after([zygote.pid], GET) == []


def signal_then_sleep(fd: int, seconds: float) -> None:
    os.write(fd, os.getpid().to_bytes(4, "little"))
    time.sleep(seconds)


def test_a_killed_replacement_is_reported_with_its_signal() -> None:
    # Replacement workers are the zygote's children: their exit codes come from it.
    # The pipe exists before the pool: every fork worker (the zygote's too) has it.
    started_r, started_w = os.pipe()
    pool = procpool.Pool(1, maxtasksperchild=1, context=_fork())
    try:
        first = pool.apply(os.getpid)  # that worker retires: the zygote forks the next
        result = pool.apply_async(signal_then_sleep, (started_w, GET * 3))
        assert select.select([started_r], [], [], GET)[0]  # the call is running
        worker = int.from_bytes(os.read(started_r, 4), "little")
        assert worker != first
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(procpool.WorkerLostError) as info:
            result.get(GET)
        assert "SIGKILL" in str(info.value), str(info.value)
        assert pool.apply(abs, (-3,)) == 3
    finally:
        pool.terminate()
        pool.join()
        os.close(started_r)
        os.close(started_w)


def _fork() -> object:
    import multiprocessing

    return multiprocessing.get_context("fork")
