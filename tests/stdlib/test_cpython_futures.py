"""CPython's own ``concurrent.futures`` process-pool tests, run against procpool.Executor.

The tests are imported from the running interpreter's ``test`` package, never copied:
on 3.13 the package ``test.test_concurrent_futures``; on 3.11 the single file that
Debian's ``libpython3.11-testsuite`` installs (CPython 3.11.2's), loaded by path (the
pyenv build has no ``test_concurrent_futures``). On 3.12 no source is installed on the
project's machines, and the module is skipped with that reason.

Each process-pool class CPython builds (``ProcessPool{Fork,Forkserver,Spawn}…Test``,
from its ``ProcessPool*Mixin`` and ``create_executor_tests``) is subclassed here with
``executor_type = procpool.Executor``; its ``mp_context`` keeps the class's start
method. While one of these tests runs, ``concurrent.futures.ProcessPoolExecutor`` is
procpool's too (some tests name it directly), and the CPython module's generated
class names point at the procpool variants (``FailingInitializerResourcesTest`` runs
one by name). ``FutureTests`` runs with procpool's Future (made without an executor)
in place of the stdlib's. Only the thread-pool classes are left out.

A test is skipped only if it reaches into the stdlib executor's internals; each such
test and the reason are in ``SKIPS``.
"""

from __future__ import annotations

import concurrent.futures
import gc
import importlib
import importlib.util
import logging
import os
import sys
import types
import unittest
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

import procpool
from procpool._api.future import Future

_MIXINS = ("ProcessPoolForkMixin", "ProcessPoolForkserverMixin", "ProcessPoolSpawnMixin")
_DEBIAN_311 = "/usr/lib/python3.11/test/test_concurrent_futures.py"
_PACKAGE_313 = "test.test_concurrent_futures"
_MODULES_313 = (
    "test_process_pool",
    "test_deadlock",
    "test_shutdown",
    "test_wait",
    "test_as_completed",
    "test_init",
    "test_future",
)

_CHILD = "runs concurrent.futures.<executor_type.__name__> in a child interpreter"
_MANAGER = "reads the stdlib executor's _executor_manager_thread"
# "<class that defines the test>.<test>" -> why it is skipped. Only tests that touch
# a name internal to concurrent.futures.process.
SKIPS: dict[str, str] = {
    "ExecutorDeadlockTest.test_error_at_task_pickle": _MANAGER + " (to join it)",
    "ExecutorDeadlockTest.test_shutdown_deadlock_pickle": _MANAGER + " (to join it)",
    "ProcessPoolShutdownTest.test_del_shutdown": _MANAGER + " and _call_queue",
    "ProcessPoolShutdownTest.test_shutdown_no_wait": _MANAGER + " and _call_queue",
    "ProcessPoolExecutorTest.test_python_finalization_error": (
        "counts the stdlib executor's thread starts (threading._start_joinable_thread "
        "fails the second: its queue feeder thread); procpool starts none in map"
    ),
    # Not internal names: these start a fresh interpreter that imports the executor
    # by name from concurrent.futures ("from concurrent.futures import Executor"
    # for procpool.Executor), so procpool cannot be put in; tests/api/test_executor.py
    # (test_exit_waits_for_submitted_calls) checks the same exits with procpool.
    "ExecutorShutdownTest.test_interpreter_shutdown": _CHILD,
    "ExecutorShutdownTest.test_submit_after_interpreter_shutdown": _CHILD,
}

# Deliberate differences (docs/compatibility.md): "<class>.<test>" -> (the start
# methods it applies to, or None for all; what procpool does instead, and the test
# of procpool's own that asserts it). Not skipped because procpool cannot: each asserts
# a stdlib behaviour that procpool exists to improve on.
DIFFERENCES: dict[str, tuple[str | None, str]] = {
    "ProcessPoolExecutorTest.test_killed_child": (
        None,
        "asserts that one killed worker breaks the whole executor for good; procpool "
        "fails only the task it held and goes on (tests/api/test_executor_crash.py)",
    ),
    "ProcessPoolExecutorTest.test_max_tasks_per_child": (
        "fork",
        "under fork asserts only that max_tasks_per_child is refused (ValueError); "
        "procpool forks workers from a single-threaded zygote, so it is safe and "
        "allowed (tests/api/test_executor.py::test_max_tasks_per_child)",
    ),
}


def _why_not_run(cls: type, attr: str) -> str | None:
    """The reason ``cls.attr`` is skipped, or None to run it."""
    key = f"{_defining_class(cls, attr)}.{attr}"
    if key in SKIPS:
        return SKIPS[key]
    method, reason = DIFFERENCES.get(key, ("", ""))
    if reason and method in (None, getattr(cls, "ctx", None)):
        return "deliberate difference: " + reason
    return None


def _load() -> list[types.ModuleType]:
    """The CPython test modules of this interpreter (skip the module on 3.12)."""
    version = sys.version_info[:2]
    if version == (3, 11):
        return [_load_311()]
    if version == (3, 12):
        pytest.skip(
            f"CPython {sys.version.split()[0]}'s test_concurrent_futures is not "
            "installed on this machine",
            allow_module_level=True,
        )
    return [importlib.import_module(f"{_PACKAGE_313}.{name}") for name in _MODULES_313]


def _load_311() -> types.ModuleType:
    """Debian's CPython 3.11 file, as the top-level module ``test_concurrent_futures``.

    Its directory goes at the end of ``sys.path`` (shadowing nothing) so that spawn and
    forkserver workers, which get the parent's path, can import the module's functions.
    """
    if not os.path.exists(_DEBIAN_311):
        raise ImportError(
            f"{_DEBIAN_311} is missing: apt-get install -y libpython3.11-testsuite"
        )
    name = "test_concurrent_futures"
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(_DEBIAN_311)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, _DEBIAN_311)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_process_pool(cls: type) -> bool:
    return any(base.__name__ in _MIXINS for base in cls.__mro__)


def _defining_class(cls: type, attr: str) -> str:
    return next(k.__name__ for k in cls.__mro__ if attr in vars(k))


def _skipped(reason: str) -> Callable[[unittest.TestCase], None]:
    @unittest.skip(reason)
    def test(self: unittest.TestCase) -> None:
        pass  # never runs

    return test


def _substituted(cls: type, module: types.ModuleType, names: dict[str, type]) -> type:
    """``cls`` with procpool's Executor (or Future) in place of the stdlib's."""
    future_tests = not _is_process_pool(cls)

    def setUp(self: unittest.TestCase) -> None:
        patches = [
            mock.patch.object(concurrent.futures, "ProcessPoolExecutor", procpool.Executor),
            mock.patch.dict(module.__dict__, names),
        ]
        if future_tests:
            util = sys.modules[cls.__mro__[1].__module__]  # BaseTestCase's: create_future
            patches.append(mock.patch.dict(module.__dict__, {"Future": Future}))
            patches.append(mock.patch.dict(util.__dict__, {"Future": Future}))
            # Its callback tests read logging's last-resort output on stderr, which
            # pytest's capture handler on the root logger would take instead.
            patches.append(mock.patch.object(logging.root, "handlers", []))
        for patch in patches:
            patch.start()
            self.addCleanup(patch.stop)
        if cls.__name__ == "FailingInitializerResourcesTest":
            # It stops the resource tracker and fails if any semaphore is still
            # registered, counting the whole process's. CPython runs each test file in
            # a fresh process; here an earlier test's Event may wait in a reference
            # cycle, and the tracker would unlink it under its finalizer.
            gc.collect()
        cls.setUp(self)  # type: ignore[attr-defined]

    attrs: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": cls.__name__,
        "setUp": setUp,
    }
    if not future_tests:
        attrs["executor_type"] = procpool.Executor
    for attr in dir(cls):
        reason = _why_not_run(cls, attr) if attr.startswith("test") else None
        if reason is not None:
            attrs[attr] = _skipped(reason)
    return type(cls.__name__, (cls,), attrs)


def _cases(module: types.ModuleType) -> list[type]:
    """The module's own TestCase classes that we run: process pools, FutureTests, and
    classes that drive process-pool classes by name."""
    found = []
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, unittest.TestCase)):
            continue
        if value.__module__ != module.__name__:
            continue
        if _is_process_pool(value) or value.__name__ in (
            "FutureTests",
            "FailingInitializerResourcesTest",
        ):
            found.append(value)
    return found


def _build() -> dict[str, type]:
    built: dict[str, type] = {}
    for module in _load():
        cases = _cases(module)
        # Every name a case may use to reach a sibling process-pool class.
        names: dict[str, type] = {}
        for cls in cases:
            new = _substituted(cls, module, names)
            if _is_process_pool(cls):
                names[cls.__name__] = new
            assert cls.__name__ not in built, cls.__name__
            built[cls.__name__] = new
    return built


globals().update(_build())
