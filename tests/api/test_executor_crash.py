"""The Executor's crash matrix: misbehave at every stage of a call, on every start method.

Each cell submits one call that raises, exits (``os._exit(3)``) or kills itself
(SIGKILL) at one stage, between ordinary calls, and checks three things: that call's
future holds a clear error (type, and a message that names what happened), the
ordinary calls complete, and the executor still answers afterwards.

Stages, in the order a call travels:

====================  ==========  ==============================================
stage                 where       procpool's error
====================  ==========  ==============================================
pickle call           parent      the pickler's own error, on the future
unpickle call         worker      ``SerializationError`` ("unpickle task")
run                   worker      the call's own exception
pickle result         worker      the pickler's own error
unpickle result       parent      ``SerializationError`` ("unpickle result")
====================  ==========  ==============================================

As in the stdlib, a pickling error is the pickler's own exception (here the
``CustomError`` that ``__reduce__`` raised), with a note that names what could not be
pickled; an unpickling error is a ``BrokenProcessPool``. An exit or a kill in a worker
is a ``WorkerLostError`` (a ``BrokenProcessPool`` too) naming the pid and the exit code
or signal. Unlike the stdlib, each of these fails only that future: the executor goes
on. An exit or a kill in the parent (pickling the call, unpickling the result) would
end the test process itself: no library can survive its own death, so those cells are
skipped.

The stdlib differs in one way, documented by ``test_stdlib_*`` below: any worker death
breaks the whole ``ProcessPoolExecutor`` for good.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import procpool
from executor_funcs import (
    Crash,
    CustomError,
    return_crash,
    run_crash,
    square,
    take,
)
from proc_utils import GET

HOWS = ["raise", "exit", "kill"]
STAGES = ["pickle call", "unpickle call", "run", "pickle result", "unpickle result"]
IN_PARENT = {"pickle call", "unpickle result"}


@pytest.fixture
def executor(start_method: str) -> Iterator[procpool.Executor]:
    with procpool.Executor(2, start_method) as executor:
        yield executor


def misbehaving_call(stage: str, how: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function and arguments of a call that misbehaves at ``stage``."""
    if stage == "pickle call":
        return take, (Crash("pickle", how),)
    if stage == "unpickle call":
        return take, (Crash("unpickle", how),)
    if stage == "run":
        return run_crash, (how,)
    if stage == "pickle result":
        return return_crash, ("pickle", how)
    return return_crash, ("unpickle", how)


def check_error(error: BaseException | None, stage: str, how: str, fn: str) -> None:
    """The error on the misbehaving call's future names what happened."""
    if how == "exit":
        assert isinstance(error, procpool.WorkerLostError) and isinstance(error, BrokenProcessPool)
        assert error.exitcode == 3 and error.pid is not None
        assert f"worker {error.pid} exited with code 3" in str(error)
        assert fn in str(error)  # the call it was running
    elif how == "kill":
        assert isinstance(error, procpool.WorkerLostError)
        assert error.signal == "SIGKILL" and "killed by SIGKILL" in str(error)
        assert fn in str(error)
    elif stage == "run":
        assert isinstance(error, CustomError) and "run_crash raised" in str(error)
    elif stage.startswith("pickle"):
        assert type(error) is CustomError and "Crash.__reduce__ refused" in str(error)
        what = "argument 0 of the call" if stage == "pickle call" else "the result of"
        assert what in error.__notes__[-1] and "could not be pickled" in error.__notes__[-1]
    else:
        assert isinstance(error, procpool.SerializationError), repr(error)
        assert isinstance(error, BrokenProcessPool)
        assert error.stage == stage.replace("call", "task")
        assert "CustomError" in str(error) and "Crash" in str(error)


def matrix() -> list[Any]:
    cells = []
    for stage in STAGES:
        for how in HOWS:
            marks = []
            if stage in IN_PARENT and how != "raise":
                reason = f"'{how}' during '{stage}' happens in the parent: the test process dies"
                marks.append(pytest.mark.skip(reason=reason))
            cells.append(pytest.param(stage, how, marks=marks, id=f"{stage}-{how}"))
    return cells


@pytest.mark.parametrize(("stage", "how"), matrix())
def test_crash_matrix(executor: procpool.Executor, stage: str, how: str) -> None:
    before = [executor.submit(square, i) for i in range(3)]
    fn, args = misbehaving_call(stage, how)
    check_error(executor.submit(fn, *args).exception(GET), stage, how, fn.__name__)
    after = [executor.submit(square, i) for i in range(3, 6)]
    assert [f.result(GET) for f in before + after] == [i * i for i in range(6)]
    assert list(executor.map(square, range(4))) == [0, 1, 4, 9]  # still answers


@pytest.mark.parametrize("stage", ["unpickle call", "run", "pickle result"])
def test_a_dead_worker_fails_only_its_own_map_chunk(
    executor: procpool.Executor, stage: str
) -> None:
    fn, args = misbehaving_call(stage, "kill")
    doomed = executor.submit(fn, *args)
    results = list(executor.map(square, range(10), chunksize=3))
    assert isinstance(doomed.exception(GET), procpool.WorkerLostError)
    assert results == [i * i for i in range(10)]


def test_many_deaths_in_a_row_do_not_break_the_executor(start_method: str) -> None:
    with procpool.Executor(2, start_method) as executor:
        doomed = [executor.submit(run_crash, "exit") for _ in range(3)]
        assert all(isinstance(f.exception(GET), procpool.WorkerLostError) for f in doomed)
        assert executor.submit(square, 9).result(GET) == 81


# -- what the stdlib does instead (fork only: the behaviour is the same everywhere)


@pytest.fixture
def stdlib_executor() -> Iterator[cf.ProcessPoolExecutor]:
    with cf.ProcessPoolExecutor(2, multiprocessing.get_context("fork")) as executor:
        yield executor


def test_stdlib_sets_a_pickling_error_on_the_future(
    stdlib_executor: cf.ProcessPoolExecutor,
) -> None:
    future = stdlib_executor.submit(take, Crash("pickle", "raise"))
    assert isinstance(future.exception(GET), CustomError)


def test_stdlib_breaks_for_good_when_a_worker_dies(
    stdlib_executor: cf.ProcessPoolExecutor,
) -> None:
    future = stdlib_executor.submit(run_crash, "exit")
    assert isinstance(future.exception(GET), BrokenProcessPool)
    with pytest.raises(BrokenProcessPool):
        stdlib_executor.submit(square, 2)
