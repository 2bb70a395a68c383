"""The functions the benchmarks run in workers, and the floors they are compared with.

Everything a worker calls lives here, at module level, so that every peer can find it:
fork-based pools inherit it, spawn-based ones (loky, joblib) import ``workloads`` by
name (``run.py`` puts ``benchmarks/`` on ``PYTHONPATH`` for them).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
from typing import Any

_LEN = struct.Struct("<I")


def noop() -> None:
    """A call that does nothing: what is left is the pool's own overhead."""
    return None


def inc(x: int) -> int:
    """A cheap function for maps over many small items."""
    return x + 1


def echo(a: Any) -> Any:
    """Return the argument: an array goes in and the same array comes back out."""
    return a


def spin(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` iterations of integer arithmetic."""
    acc = 0
    for i in range(loops):
        acc += i * i
    return acc


def spin_units(loops: int, units: int) -> None:
    """``units`` consecutive :func:`spin` calls (a bare process's static share)."""
    for _ in range(units):
        spin(loops)


def calibrate(target: float = 0.001) -> int:
    """A loop count for :func:`spin` that takes about ``target`` seconds here."""
    loops = 1000
    while True:
        t0 = time.perf_counter()
        spin(loops)
        took = time.perf_counter() - t0
        if took > 0.02:
            break
        loops *= 2
    # The fastest of several samples: on a shared machine the others are slowed by
    # whoever else runs, and the work unit should not shrink with the noise.
    best = min(_timed_spin(loops) for _ in range(15))
    return max(1, int(loops * target / best))


def _timed_spin(loops: int) -> float:
    t0 = time.perf_counter()
    spin(loops)
    return time.perf_counter() - t0


# -- the pipe floor: the least any pool can do for one call


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, 5)
    os.write(fd, _LEN.pack(len(data)) + data)


def _recv(fd: int, poll_for: float = 0.0) -> Any:
    if poll_for:  # watch the pipe without sleeping, for at most poll_for seconds
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        until = time.perf_counter() + poll_for
        while not poller.poll(0) and time.perf_counter() < until:
            pass
    (n,) = _LEN.unpack(_read_exact(fd, _LEN.size))
    return pickle.loads(_read_exact(fd, n))


def pipe_ping_pong(calls: int, poll_for: float = 0.0) -> list[float]:
    """Seconds per round trip of a pickled small tuple over an ``os.pipe`` pair.

    A forked child reads ``(id, name, args)`` (length-prefixed pickle), unpickles it,
    and answers ``(id, None)`` the same way: the cheapest honest "call" between two
    processes, and the floor for a pool's ``apply`` latency. With ``poll_for`` both
    sides watch their pipe that long before sleeping on it (what procpool does for a
    blocking apply): the round trip then costs no process wake-up.
    """
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer until EOF
        code = 0
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            while True:
                tid, _name, _args = _recv(to_child_r, poll_for)
                _send(to_parent_w, (tid, None))
        except EOFError:
            pass
        except BaseException:
            code = 1
        os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    times = []
    try:
        for tid in range(calls):
            t0 = time.perf_counter()
            _send(to_child_w, (tid, "noop", ()))
            answer = _recv(to_parent_r, poll_for)
            times.append(time.perf_counter() - t0)
            assert answer == (tid, None)
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)
    return times


def two_bare_processes(loops: int, units: int) -> float:
    """Wall seconds for two bare ``multiprocessing.Process``es to split ``units`` spins.

    The ceiling for CPU-bound work on two cores: a static half each, no pool, no
    messages. Process start and join are inside the timing (they are what a user of
    bare processes pays).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    half = units // 2
    t0 = time.perf_counter()
    procs = [
        ctx.Process(target=spin_units, args=(loops, half)),
        ctx.Process(target=spin_units, args=(loops, units - half)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    took = time.perf_counter() - t0
    for p in procs:
        if p.exitcode != 0:
            raise RuntimeError(f"a bare process exited with {p.exitcode}")
    return took
