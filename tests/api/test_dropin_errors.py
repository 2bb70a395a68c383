"""Drop-in fidelity of errors (issue 12, items 3-5): the types and places the stdlib uses.

- a call that cannot be pickled fails with the pickler's own exception, from ``get()``
  / ``result()`` (never from ``apply_async`` / ``submit``), with a note naming the part
  of the call that would not pickle;
- a result that cannot be pickled: ``MaybeEncodingError`` from a Pool, the pickler's own
  exception from an Executor;
- what cannot be unpickled (in the worker or in the parent) is a ``BrokenProcessPool``,
  as the stdlib says, but only that task fails;
- a worker's exception has the stdlib's remote-traceback class as its ``__cause__``.
"""

from __future__ import annotations

import concurrent.futures.process as cfp
import multiprocessing.pool
import threading
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError

import pytest

import fault_funcs as ff
import procpool
from proc_utils import GET


class RefusesToPickle:
    """An argument whose ``__reduce__`` raises, as in the stdlib's tests."""

    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("RefusesToPickle.__reduce__ says no")


def test_pool_raises_the_picklers_own_error_from_get(start_method: str) -> None:
    seen: list[BaseException] = []
    with procpool.Pool(2, context=start_method) as pool:
        result = pool.apply_async(ff.identity, (RefusesToPickle(),), error_callback=seen.append)
        with pytest.raises(RuntimeError, match="says no") as info:
            result.get(GET)
        assert "argument 0 of the call (RefusesToPickle object)" in info.value.__notes__[-1]
        assert seen == [info.value]
        with pytest.raises(RuntimeError):
            pool.apply(ff.identity, (), {"x": RefusesToPickle()})
        with pytest.raises(TypeError, match="cannot pickle"):
            pool.map(ff.identity, [1, threading.Lock(), 3], chunksize=1)
        assert pool.map(ff.square, range(5)) == [0, 1, 4, 9, 16]  # the pool goes on


def test_executor_sets_the_picklers_own_error_on_the_future(start_method: str) -> None:
    with procpool.Executor(2, start_method) as executor:
        future = executor.submit(ff.identity, RefusesToPickle())  # does not raise
        error = future.exception(GET)
        assert type(error) is RuntimeError
        assert "argument 0 of the call" in error.__notes__[-1]
        assert executor.submit(ff.square, 3).result(GET) == 9


def test_an_unpicklable_pool_result_is_a_maybe_encoding_error(start_method: str) -> None:
    seen: list[BaseException] = []
    with procpool.Pool(2, context=start_method) as pool:
        result = pool.apply_async(threading.Lock, error_callback=seen.append)
        with pytest.raises(MaybeEncodingError) as info:
            result.get(GET)
        assert "cannot pickle" in info.value.exc and "lock object" in info.value.value
        assert "Error sending result" in str(info.value)
        assert seen and isinstance(seen[0], MaybeEncodingError)
        with pytest.raises(MaybeEncodingError):
            pool.map(_lock_or_value, range(4), chunksize=1)
        assert pool.apply(ff.square, (4,)) == 16


def _lock_or_value(i: int) -> object:
    return threading.Lock() if i == 2 else i


def test_an_unpicklable_executor_result_is_the_picklers_own_error() -> None:
    with procpool.Executor(2, "fork") as executor:
        error = executor.submit(threading.Lock).exception(GET)
        assert type(error) is TypeError and "cannot pickle" in str(error)
        assert "the result of" in error.__notes__[-1]


@pytest.mark.parametrize("api", ["pool", "executor"])
def test_unpickling_failures_are_broken_process_pool_for_that_task_only(api: str) -> None:
    if api == "pool":
        with procpool.Pool(2, context="fork") as pool:
            in_worker = pool.apply_async(ff.identity, (ff.Trap("raise", "unpickle"),))
            in_parent = pool.apply_async(ff.make_trap, ("raise", "unpickle"))
            errors = [_error_of(in_worker.get), _error_of(in_parent.get)]
            assert pool.apply(ff.square, (5,)) == 25
    else:
        with procpool.Executor(2, "fork") as executor:
            in_worker_f = executor.submit(ff.identity, ff.Trap("raise", "unpickle"))
            in_parent_f = executor.submit(ff.make_trap, "raise", "unpickle")
            errors = [in_worker_f.exception(GET), in_parent_f.exception(GET)]
            assert executor.submit(ff.square, 5).result(GET) == 25
    for error, stage in zip(errors, ["unpickle task", "unpickle result"], strict=True):
        assert isinstance(error, BrokenProcessPool)
        assert isinstance(error, procpool.SerializationError)
        assert error.stage == stage and "trap sprung" in str(error)


def _error_of(get: object) -> BaseException:
    try:
        get(GET)  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


def test_remote_tracebacks_are_the_stdlib_classes() -> None:
    with procpool.Pool(2, context="fork") as pool:
        pool_error = _error_of(pool.apply_async(ff.run_action, ("raise",)).get)
    with procpool.Executor(2, "fork") as executor:
        executor_error = executor.submit(ff.run_action, "raise").exception(GET)
    # Exactly the stdlib's class for each API (CPython's own tests check type() is).
    expected = {
        id(pool_error): multiprocessing.pool.RemoteTraceback,
        id(executor_error): cfp._RemoteTraceback,
    }
    for error in (pool_error, executor_error):
        assert type(error) is ff.TrapError
        cause = error.__cause__
        assert type(cause) is expected[id(error)]
        assert isinstance(cause, procpool.RemoteTraceback)
        assert "run_action" in str(cause) and "run_action" in cause.tb
