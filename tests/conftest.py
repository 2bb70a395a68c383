"""Shared fixtures: start methods, and a leak check around every test.

Every test runs under pytest-timeout (pyproject sets the default) and must leave
behind no child process, no thread and no shared-memory segment.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Collection, Iterator

import pytest

START_METHODS = ["fork", "forkserver", "spawn"]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method in turn."""
    return str(request.param)


def _helper_pids() -> set[int]:
    """Long-lived helpers multiprocessing keeps for the whole session."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    fs = getattr(forkserver, "_forkserver", None)
    if fs is not None and getattr(fs, "_forkserver_pid", None):
        pids.add(fs._forkserver_pid)
    rt = getattr(resource_tracker, "_resource_tracker", None)
    if rt is not None and getattr(rt, "_pid", None):
        pids.add(rt._pid)
    return pids


def child_pids() -> set[int]:
    """Pids of this process's direct children, zombies included (from /proc)."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me:
            found.add(int(entry))
    return found - _helper_pids()


# Segments procpool creates, and the stdlib's default names. (Other programs on a
# shared machine, joblib's memmapping folders say, come and go on their own.)
_SHM_PREFIXES = ("procpool", "psm_", "wnsm_")


def shm_segments() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(_SHM_PREFIXES)}
    except FileNotFoundError:
        return set()


def leak_problems(
    children: set[int],
    threads: set[threading.Thread],
    shm: set[str],
    own_pids: Collection[int] = (),
    own_threads: Collection[threading.Thread] = (),
) -> list[str]:
    """What was left since the snapshot (``children``, ``threads``, ``shm``), leaving
    out ``own_pids`` and ``own_threads``; leaked children are killed."""
    multiprocessing.active_children()  # reap stdlib pools' finished workers
    left_children = child_pids() - children - set(own_pids)
    left_threads = [
        t for t in threading.enumerate()
        if t not in threads and t not in own_threads and t.is_alive()
        # (pytest-timeout's watchdog of the current test, when a module-scoped
        # fixture tears down inside that test's window)
        and not t.name.startswith("pytest_timeout ")
    ]
    left_shm = shm_segments() - shm
    problems = []
    if left_children:
        problems.append(f"child processes left running: {sorted(left_children)}")
    if left_threads:
        problems.append(f"threads left running: {[t.name for t in left_threads]}")
    if left_shm:
        problems.append(f"shared memory left in /dev/shm: {sorted(left_shm)}")
    for pid in left_children:  # do not let one leak fail every later test
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    return problems


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process, a thread or a /dev/shm segment."""
    children = child_pids()
    threads = set(threading.enumerate())
    shm = shm_segments()
    yield
    problems = leak_problems(children, threads, shm)
    assert not problems, "; ".join(problems)
