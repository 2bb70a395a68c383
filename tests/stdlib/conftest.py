"""The leak check of tests/conftest.py, aware of CPython's class-level pools.

CPython's ``_TestPool`` makes one pool in ``setUpClass`` (``cls.pool``) and ends it
in ``tearDownClass``. Its workers and threads live across tests, and its callback
thread starts at the first callback, inside some test: the per-test check would call
that a leak. Here the per-test check leaves out only what belongs to a running
procpool pool held by the test's class; a module-wide check (``no_leaks_in_module``,
which test_cpython_pool uses) then asserts that, once every class is torn down,
nothing at all is left.
"""

from __future__ import annotations

import gc
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import procpool

_spec = importlib.util.spec_from_file_location(
    "_procpool_base_conftest", Path(__file__).parent.parent / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_base: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def _class_pools(cls: type | None) -> list[procpool.Pool]:
    if cls is None:
        return []
    return [v for v in vars(cls).values() if isinstance(v, procpool.Pool)]


def _owned(pools: list[procpool.Pool]) -> tuple[set[int], set[threading.Thread]]:
    """The worker pids and threads of the running pools in ``pools``."""
    pids: set[int] = set()
    threads: set[threading.Thread] = set()
    for pool in pools:
        engine = pool._engine
        if not engine.alive():
            continue
        pids.update(engine.worker_pids())
        threads.update(engine.threads())
    return pids, threads


def _problems(children: set[int], threads: set[threading.Thread], shm: set[str],
              pools: list[procpool.Pool]) -> list[str]:
    own_pids, own_threads = _owned(pools)
    problems: list[str] = _base.leak_problems(children, threads, shm, own_pids, own_threads)
    return problems


@pytest.fixture(scope="module")
def no_leaks_in_module() -> Iterator[None]:
    """Nothing left once the module's classes (and their class-level pools) are done."""
    children = _base.child_pids()
    threads = set(threading.enumerate())
    shm = _base.shm_segments()
    yield
    gc.collect()
    problems = _problems(children, threads, shm, [])
    assert not problems, "after the module: " + "; ".join(problems)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """tests/conftest.py's check, less a class-level pool's own workers and threads."""
    children = _base.child_pids()
    threads = set(threading.enumerate())
    shm = _base.shm_segments()
    yield
    problems = _problems(children, threads, shm, _class_pools(request.cls))
    assert not problems, "; ".join(problems)
