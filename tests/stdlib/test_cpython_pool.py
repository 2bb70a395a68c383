"""CPython's own ``multiprocessing.Pool`` tests, run against procpool.Pool.

The tests are imported from the running interpreter's ``test._test_multiprocessing``
(3.11, 3.12 and 3.13 all install it), never copied. CPython builds its per-start-method
classes in ``install_tests_in_module_dict``: ``class WithProcessesTestPool(_TestPool,
ProcessesMixin, TestCase)`` with the start method set process-wide in
``setUpModule``. Here each pool class is built the same way for fork, forkserver and
spawn, with a mixin in front whose ``Pool`` is procpool.Pool bound to that start
method's context (passed as ``context=``, never through ``set_start_method``: xdist
runs other modules in the same process). While one of these tests runs,
``multiprocessing.Pool`` and ``multiprocessing.pool.Pool`` are procpool's too, with the
same context, since several tests name them directly.

The classes: every ``BaseTestCase`` subclass whose tests make pools (``_TestPool``,
``_TestPoolWorkerErrors``, ``_TestPoolWorkerLifetime``), and the tests of the plain
``TestCase`` classes that make a Pool (``TestInitializers.test_pool_initializer``,
``TestStdinBadfiledescriptor.test_pool_in_process``,
``TestPoolNotLeakOnFailure``). A test is skipped only if it reaches into the stdlib
pool's internals; each such test and the reason are in ``SKIPS``.

Two of them run a Pool in a fresh interpreter or child process that this module cannot
patch: ``test_worker_finalization_via_atexit_handler_of_multiprocessing`` (a ``python
-c`` script) always exercises the stdlib's Pool, and ``test_pool_in_process`` does
under spawn and forkserver (under fork the child inherits the patch).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import unittest
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

import procpool

tm = pytest.importorskip("test._test_multiprocessing")

START_METHODS = ("fork", "forkserver", "spawn")

# Class-level pools end in tearDownClass: see conftest.py.
pytestmark = pytest.mark.usefixtures("no_leaks_in_module")

# "<class that defines the test>.<test>" -> why it is skipped. Only tests that touch a
# name internal to multiprocessing.pool.
SKIPS: dict[str, str] = {
    "_TestPool.test_resource_warning": (
        "sets the stdlib Pool's internal _state to multiprocessing.pool.RUN after "
        "terminate() to force the warning (procpool's own test drops a running pool)"
    ),
    "TestPoolNotLeakOnFailure.test_release_unused_processes": (
        "passes multiprocessing.pool.Pool a mock context whose Process is a stand-in "
        "with no pid or sentinel, to test the stdlib Pool's internal worker start-up "
        "(_repopulate_pool_static); procpool's workers are real processes it watches"
    ),
}

# Deliberate differences (docs/compatibility.md): "<class>.<test>" -> what procpool
# does instead, and the test of procpool's own that asserts it.
DIFFERENCES: dict[str, str] = {
    "_TestPoolWorkerErrors.test_unpickleable_result": (
        "its unpicklable result is a lambda, which procpool pickles (cloudpickle); a "
        "result that truly cannot be pickled is a MaybeEncodingError and the worker "
        "goes on (tests/api/test_dropin_errors.py::"
        "test_an_unpicklable_pool_result_is_a_maybe_encoding_error)"
    ),
}

# The plain TestCase classes: which of their tests exercise Pool.
_PLAIN_TESTS: dict[str, tuple[str, ...]] = {
    "TestInitializers": ("test_pool_initializer",),
    "TestStdinBadfiledescriptor": ("test_pool_in_process",),
    "TestPoolNotLeakOnFailure": ("test_release_unused_processes",),
}


def _pool_classes() -> list[type]:
    """The BaseTestCase subclasses of the module that make pools in processes."""
    found = []
    for name, base in vars(tm).items():
        if not (isinstance(base, type) and issubclass(base, tm.BaseTestCase)):
            continue
        if base is tm.BaseTestCase or "processes" not in base.ALLOWED_TYPES:
            continue
        if name.startswith("_TestPool"):
            found.append(base)
    return found


def _context_pool(ctx: Any) -> Any:
    """procpool.Pool with ``ctx`` as its context unless the caller names one."""

    def pool(*args: Any, **kwargs: Any) -> procpool.Pool:
        if len(args) < 5:
            kwargs.setdefault("context", ctx)
        return procpool.Pool(*args, **kwargs)

    return pool


class _ProcpoolMixin:
    """In front of CPython's ProcessesMixin: Pool is procpool's, for one start method."""

    start_method = "spawn"

    @classmethod
    def Pool(cls, *args: Any, **kwargs: Any) -> procpool.Pool:
        pool: procpool.Pool = _context_pool(multiprocessing.get_context(cls.start_method))(
            *args, **kwargs
        )
        return pool

    def setUp(self) -> None:
        pool = _context_pool(multiprocessing.get_context(self.start_method))
        for patch in (
            mock.patch.object(multiprocessing, "Pool", pool),
            mock.patch.object(multiprocessing.pool, "Pool", pool),
        ):
            patch.start()
            self.addCleanup(patch.stop)
        super().setUp()  # type: ignore[misc]


def _skipped(base: type, names: Iterator[str]) -> dict[str, Any]:
    """Class attributes that skip the listed tests of ``base``, with their reasons."""
    body: dict[str, Any] = {}
    for name in names:
        key = f"{base.__name__}.{name}"
        reason = SKIPS.get(key)
        if key in DIFFERENCES:
            reason = "deliberate difference: " + DIFFERENCES[key]
        if reason is not None:
            body[name] = unittest.skip(reason)(getattr(base, name))
    return body


def _build() -> dict[str, type]:
    classes: dict[str, type] = {}
    for method in START_METHODS:
        tag = method.capitalize()
        for base in _pool_classes():
            name = f"WithProcpool{tag}{base.__name__[1:]}"
            body = {"start_method": method, "__module__": __name__, "__qualname__": name}
            body.update(_skipped(base, (n for n in dir(base) if n.startswith("test"))))
            classes[name] = type(
                name, (_ProcpoolMixin, base, tm.ProcessesMixin, unittest.TestCase), body
            )
        for base_name, wanted in _PLAIN_TESTS.items():
            base = getattr(tm, base_name)
            name = f"Procpool{tag}{base_name[4:]}"
            body = {"start_method": method, "__module__": __name__, "__qualname__": name}
            for test in dir(base):
                if test.startswith("test") and test not in wanted:
                    body[test] = None  # not a Pool test: the loader leaves it out
            body.update(_skipped(base, iter(wanted)))
            classes[name] = type(name, (_ProcpoolMixin, base), body)
    return classes


globals().update(_build())
