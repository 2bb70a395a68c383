"""``pool.imap_stream``: tasks that yield, whose values reach the parent as they are
produced, with a failed or killed task raising once and the others going on."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator

import pytest

import procpool
import stream_funcs as sf
from proc_utils import GET


@pytest.fixture
def manager(start_method: str) -> Iterator[object]:
    with multiprocessing.get_context(start_method).Manager() as m:
        yield m


def test_a_value_arrives_before_its_task_finishes(start_method: str, manager: object) -> None:
    gate = manager.Event()  # type: ignore[attr-defined]
    with procpool.Pool(2, context=start_method) as pool:
        stream = pool.imap_stream(sf.first_then_wait, [gate])
        assert stream.next(GET) == "first"  # the task is still waiting for the gate
        gate.set()
        assert list(stream) == ["second"]


def test_every_value_of_every_task(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        values = list(pool.imap_stream(sf.count_to, range(1, 9)))
        plain = list(pool.imap_stream(sf.plain_list, [3, 2]))  # any iterable works
    assert sorted(values) == sorted((n, i) for n in range(1, 9) for i in range(n))
    for n in range(1, 9):  # each task's values in the order it yielded them
        assert [i for m, i in values if m == n] == list(range(n))
    assert sorted(plain) == [0, 0, 1, 1, 2]


def test_a_failing_task_raises_once_after_its_values(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        stream = pool.imap_stream(sf.fail_after, [3])
        assert [stream.next(GET) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="failed after 3"):
            stream.next(GET)
        with pytest.raises(StopIteration):
            stream.next(GET)


def test_a_killed_worker_fails_its_stream_alone_and_is_not_retried(start_method: str) -> None:
    with procpool.Pool(2, context=start_method, retries=2) as pool:
        got: list[object] = []
        errors: list[BaseException] = []
        stream = pool.imap_stream(sf.die_after, [2])
        while True:
            try:
                got.append(stream.next(GET))
            except StopIteration:
                break
            except procpool.WorkerLostError as exc:
                errors.append(exc)
        assert got == [0, 1]  # once: a retry would have sent them again
        assert len(errors) == 1
        assert pool.apply(sum, ([1, 2],)) == 3  # the pool goes on


def test_close_stops_a_running_stream(start_method: str, manager: object) -> None:
    gate = manager.Event()  # type: ignore[attr-defined]
    with procpool.Pool(1, context=start_method) as pool:
        with pool.imap_stream(sf.yield_then_block, [gate]) as stream:
            assert stream.next(GET) == 1
            with pytest.raises(procpool.GetTimeoutError):
                stream.next(0.05)
        assert list(stream) == []
        assert pool.apply(sum, ([2, 3],)) == 5  # its worker was stopped and replaced


def test_input_is_read_a_window_ahead_not_all_at_once(start_method: str, manager: object) -> None:
    gate = manager.Event()  # type: ignore[attr-defined]
    read: list[int] = []

    window = 2 * 512  # tasks per process, as imap's window of chunks
    items = window + 100

    def gates() -> Iterator[object]:
        for i in range(items):
            read.append(i)
            yield gate

    with procpool.Pool(2, context=start_method) as pool:
        stream = pool.imap_stream(sf.first_then_wait, gates())
        assert [stream.next(GET), stream.next(GET)] == ["first", "first"]  # two running
        assert len(read) == window  # none has finished: nothing more was read
        gate.set()
        rest = list(stream)
    assert len(read) == items
    assert rest.count("first") == items - 2 and rest.count("second") == items


def test_an_endless_input_streams_until_closed(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        with pool.imap_stream(sf.count_to, itertools.count(1)) as stream:
            got = [stream.next(GET) for _ in range(50)]
        assert list(stream) == []
        assert len(got) == 50 and all(0 <= i < n for n, i in got)
        assert pool.apply(sum, ([1, 2],)) == 3


def test_values_still_come_after_the_pool_is_closed(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        stream = pool.imap_stream(sf.count_to, range(1, 30))
        pool.close()  # the rest of the input is read by a feeder thread
        values = list(stream)
        pool.join()
    assert sorted(values) == sorted((n, i) for n in range(1, 30) for i in range(n))


def test_an_error_reading_the_input_comes_after_the_values_before_it(start_method: str) -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise KeyError("the input broke")

    with procpool.Pool(2, context=start_method) as pool:
        got: list[object] = []
        stream = pool.imap_stream(sf.count_to, broken())
        with pytest.raises(KeyError, match="the input broke"):
            for value in stream:
                got.append(value)
        assert sorted(got) == [(1, 0), (2, 0), (2, 1)]
        assert list(stream) == []
