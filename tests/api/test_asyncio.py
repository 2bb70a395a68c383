"""asyncio: ``await`` a Pool's results, ``async for`` over imap, Executor in run_in_executor.

Every test runs its coroutine under ``asyncio.run`` inside ``asyncio.timeout(GET)``, a
deadlock detector only. Cancelling the awaiting asyncio task must cancel the procpool
task: the tests check that the worker holding it died (end-of-file on the call's
check-in connection, see ``executor_funcs.Hub``) and that the pool still answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

import procpool
from executor_funcs import CustomError, Hub, check_in, raise_custom, square
from proc_utils import GET

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` with a deadlock detector around the whole coroutine."""

    async def bounded() -> T:
        async with asyncio.timeout(GET):
            return await coro_fn()

    return asyncio.run(bounded())


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub(GET)
    yield hub
    hub.close()


@pytest.fixture
def pool(hub: Hub) -> Iterator[procpool.Pool]:
    pool = procpool.Pool(2, context="fork")
    yield pool
    hub.close()
    pool.terminate()


@pytest.fixture
def executor(hub: Hub) -> Iterator[procpool.Executor]:
    executor = procpool.Executor(2, "fork")
    yield executor
    hub.close()
    executor.shutdown()


async def started_awaiting(awaitable: Awaitable[T]) -> asyncio.Task[T]:
    """A task awaiting ``awaitable``; returns once it is suspended in that await."""
    started = asyncio.Event()

    async def waiter() -> T:
        started.set()
        return await awaitable

    task = asyncio.create_task(waiter())
    await started.wait()  # the task ran up to its await before we got here
    return task


# -- await a Pool's results


def test_await_apply_async(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:

        async def main() -> list[int]:
            return [await pool.apply_async(square, (i,)) for i in range(3)]

        assert run(main) == [0, 1, 4]


def test_await_gather_errors_and_maps(pool: procpool.Pool) -> None:
    async def main() -> None:
        results = await asyncio.gather(*(pool.apply_async(square, (i,)) for i in range(8)))
        assert results == [i * i for i in range(8)]
        assert await pool.map_async(square, range(5)) == [0, 1, 4, 9, 16]
        with pytest.raises(CustomError, match="from the worker"):
            await pool.apply_async(raise_custom, ("from the worker",))
        done = pool.apply_async(square, (4,))
        done.wait(GET)
        assert await done == 16  # already finished: no waiting

    run(main)


def test_cancelling_the_awaiting_task_cancels_the_call(pool: procpool.Pool, hub: Hub) -> None:
    result = pool.apply_async(check_in, (hub.address, "never"))

    async def main() -> None:
        task = await started_awaiting(result)
        call = await asyncio.to_thread(hub.arrive)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert result.cancelled()
        with pytest.raises(procpool.CancelledError):
            result.get(GET)
        assert await asyncio.to_thread(call.wait_gone)  # its worker was stopped
        assert await pool.apply_async(square, (5,)) == 25  # and the pool goes on

    run(main)


def test_wait_for_timeout_cancels_the_call(pool: procpool.Pool, hub: Hub) -> None:
    async def main() -> None:
        result = pool.apply_async(check_in, (hub.address,))
        call = await asyncio.to_thread(hub.arrive)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(result, 0.05)
        assert result.cancelled()
        assert await asyncio.to_thread(call.wait_gone)
        assert await pool.apply_async(square, (3,)) == 9

    run(main)


# -- async for over imap


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_async_for_over_imap(pool: procpool.Pool, method: str) -> None:
    async def main() -> list[int]:
        return [x async for x in getattr(pool, method)(square, range(20))]

    results = run(main)
    assert (results if method == "imap" else sorted(results)) == [x * x for x in range(20)]


def test_async_for_raises_the_call_error(pool: procpool.Pool) -> None:
    async def main() -> list[int]:
        got = []
        with pytest.raises(CustomError):
            async for x in pool.imap(raise_custom, ["boom"]):
                got.append(x)
        return got

    assert run(main) == []


def test_cancelling_an_async_for_cancels_its_calls(pool: procpool.Pool, hub: Hub) -> None:
    async def main() -> None:
        results = pool.imap(check_in, [hub.address] * 2)

        async def consume() -> list[Any]:
            return [x async for x in results]

        task = await started_awaiting(consume())
        calls = [await asyncio.to_thread(hub.arrive) for _ in range(2)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for call in calls:
            assert await asyncio.to_thread(call.wait_gone)
        assert await pool.apply_async(square, (6,)) == 36

    run(main)


# -- Executor with run_in_executor and wrap_future


@pytest.mark.parametrize("kind", ["ProcessPoolExecutor", "procpool.Executor"])
def test_run_in_executor(kind: str) -> None:
    context = multiprocessing.get_context("fork")
    make = cf.ProcessPoolExecutor if kind == "ProcessPoolExecutor" else procpool.Executor
    with make(2, context) as executor:

        async def main() -> list[int]:
            loop = asyncio.get_running_loop()
            first = await loop.run_in_executor(executor, square, 12)
            rest = await asyncio.gather(
                *(loop.run_in_executor(executor, square, i) for i in range(6))
            )
            with pytest.raises(CustomError):
                await loop.run_in_executor(executor, raise_custom, "nope")
            return [first, *rest]

        assert run(main) == [144, 0, 1, 4, 9, 16, 25]


def test_cancelling_run_in_executor_stops_the_call(
    executor: procpool.Executor, hub: Hub
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(executor, check_in, hub.address)
        task = await started_awaiting(pending)
        call = await asyncio.to_thread(hub.arrive)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(call.wait_gone)
        assert await loop.run_in_executor(executor, square, 7) == 49

    run(main)


def test_wrap_future_and_asyncio_wait(executor: procpool.Executor) -> None:
    async def main() -> set[int]:
        futures = [asyncio.wrap_future(executor.submit(square, i)) for i in range(5)]
        done, pending = await asyncio.wait(futures, timeout=GET)
        assert not pending
        return {f.result() for f in done}

    assert run(main) == {0, 1, 4, 9, 16}
