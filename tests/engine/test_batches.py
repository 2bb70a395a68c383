"""imap over short items with chunksize=1: the items travel several to a frame (a
batch), yet each one is still its own task. One item's error, crash, time limit or
bad pickle fails that item alone; a long item never holds the rest of its batch
hostage while another worker is free; nothing is lost or run twice.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import fault_funcs as ff
import procpool
from proc_utils import drain
from procpool import SerializationError, TaskTimeoutError, WorkerLostError
from procpool._api.imap import IMapIterator

ITEMS = 4000  # long enough that later windows are batched (after the first results)


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches submitted during the test (to check there were some)."""
    sizes: list[int] = []
    real = IMapIterator._submit_batches

    def spy(self: IMapIterator[Any], count: int, size: int, feeder: bool) -> None:
        sizes.append(size)
        real(self, count, size, feeder)

    monkeypatch.setattr(IMapIterator, "_submit_batches", spy)
    return sizes


def _expected(bad: Any) -> list[Any]:
    out: list[Any] = [x * x for x in range(ITEMS)]
    out[ff.BAD_ITEM] = bad
    return out


@pytest.mark.parametrize("action", ff.ACTIONS)
def test_one_item_fails_alone(start_method: str, action: str, batches: list[int]) -> None:
    bad = ff.TrapError if action == "raise" else WorkerLostError
    with procpool.Pool(2, context=start_method) as pool:
        fn = functools.partial(ff.act_at, action=action)
        assert drain(pool.imap(fn, range(ITEMS), chunksize=1)) == _expected(bad)
        assert sorted(pool.imap_unordered(ff.square, range(100), chunksize=1)) == [
            x * x for x in range(100)
        ]
    assert max(batches) > 1


@pytest.mark.parametrize("action", ff.ACTIONS)
def test_an_item_that_cannot_be_unpickled_fails_alone(
    action: str, batches: list[int]
) -> None:
    """The worker cannot unpickle (or dies unpickling) the batch holding it: the
    items are sent again one by one, and only that one fails."""
    items: list[Any] = list(range(ITEMS))
    items[ff.BAD_ITEM] = ff.Trap(action, "unpickle")
    bad = SerializationError if action == "raise" else WorkerLostError
    with procpool.Pool(2, context="fork") as pool:
        out = drain(pool.imap(ff.identity, items, chunksize=1))
    expected: list[Any] = list(range(ITEMS))
    expected[ff.BAD_ITEM] = bad
    assert out == expected
    assert max(batches) > 1


def test_an_item_that_cannot_be_pickled_fails_alone(batches: list[int]) -> None:
    """As in the stdlib: the error takes that item's place, the map goes on (all its
    batch used to be lost, and the iteration ended there)."""
    items: list[Any] = list(range(ITEMS))
    items[ff.BAD_ITEM] = threading.Lock()
    with procpool.Pool(2, context="fork") as pool:
        out = drain(pool.imap(ff.identity, items, chunksize=1))
    assert out[: ff.BAD_ITEM] == list(range(ff.BAD_ITEM))
    assert out[ff.BAD_ITEM] is TypeError  # the pickler's own error, as in the stdlib
    assert out[ff.BAD_ITEM + 1 :] == list(range(ff.BAD_ITEM + 1, ITEMS))


def test_time_limit_applies_to_each_item(batches: list[int]) -> None:
    with procpool.Pool(2, context="fork") as pool:
        it = pool.imap(ff.forever_at, range(ITEMS), chunksize=1, task_timeout=1.0)
        assert drain(it) == _expected(TaskTimeoutError)
    assert max(batches) > 1


def test_a_long_item_does_not_hold_its_batch_hostage(batches: list[int]) -> None:
    """Every other item comes back while one item blocks: the rest of its batch was
    taken back (cut) and run by the free worker. Without that this deadlocks."""
    with multiprocessing.Manager() as manager, procpool.Pool(2, context="fork") as pool:
        release = manager.Event()
        fn = functools.partial(ff.block_at, release=release)
        it = pool.imap_unordered(fn, range(ITEMS), chunksize=1)
        got = []
        for value in it:
            got.append(value)
            if len(got) == ITEMS - 1:
                release.set()
        assert sorted(got) == sorted(x * x for x in range(ITEMS))
        assert not release.is_set() or len(got) == ITEMS
    assert max(batches) > 1


def test_retries_rerun_only_the_item_that_crashed(tmp_path: Any, batches: list[int]) -> None:
    marker = str(tmp_path / "killed")

    def items() -> Iterator[Any]:
        for x in range(ITEMS):
            yield marker if x == ff.BAD_ITEM else x

    with procpool.Pool(2, context="fork") as pool:
        out = list(pool.imap(ff.square_or_kill_once, items(), chunksize=1, retries=1))
    expected: list[Any] = [x * x for x in range(ITEMS)]
    expected[ff.BAD_ITEM] = "survived"
    assert out == expected
    assert max(batches) > 1


def test_cancel_and_terminate_in_the_middle_of_batches() -> None:
    """Cancel an imap while batches are in flight (the window keeps some in flight
    whenever input is left), then terminate the pool under an imap whose first item
    never ends: both iterations end with CancelledError, nothing hangs."""
    with procpool.Pool(2, context="fork") as pool:
        it = pool.imap_unordered(ff.square, range(100_000), chunksize=1)
        for _ in range(3000):
            next(it)
        it.cancel()
        with pytest.raises(procpool.CancelledError):
            _drain_strict(it)
        assert pool.apply(ff.square, (7,)) == 49
        blocked = pool.imap(ff.forever_at, range(ff.BAD_ITEM, ff.BAD_ITEM + ITEMS), chunksize=1)
        pool.terminate()
        with pytest.raises(procpool.CancelledError):
            _drain_strict(blocked)


def _drain_strict(it: Iterator[Any]) -> None:
    for _ in it:
        pass
