"""``procpool.Queue``: a queue tasks take as an argument, under every start method,
with the stdlib's blocking and timeout semantics, back-pressure, and no item lost when
a worker is killed."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from collections.abc import Iterator

import pytest

import procpool
import sharedq_funcs as qf
from proc_utils import GET


@pytest.fixture
def queues() -> Iterator[list[procpool.Queue]]:
    made: list[procpool.Queue] = []
    yield made
    for q in made:
        q.close()


def _new(queues: list[procpool.Queue], maxsize: int = 0) -> procpool.Queue:
    q = procpool.Queue(maxsize)
    queues.append(q)
    return q


def test_tasks_report_progress_to_the_parent(start_method: str, queues: list) -> None:
    q = _new(queues)
    with procpool.Pool(2, context=start_method) as pool:
        done = [pool.apply_async(qf.report_progress, (q, 50)) for _ in range(2)]
        got = [q.get(timeout=GET) for _ in range(100)]
        assert [r.get(GET) for r in done] == [50, 50]
    assert sorted(i for _, i in got) == sorted(list(range(50)) * 2)
    assert q.empty()


def test_tasks_take_work_and_pass_items_to_each_other(start_method: str, queues: list) -> None:
    work, results, link = _new(queues), _new(queues), _new(queues)
    with procpool.Pool(2, context=start_method) as pool:
        worker = pool.apply_async(qf.take_and_square, (work, results, 5))
        for i in range(5):
            work.put(i)
        assert sorted(results.get(timeout=GET) for _ in range(5)) == [0, 1, 4, 9, 16]
        worker.get(GET)
        consumer = pool.apply_async(qf.consume, (link,))
        producer = pool.apply_async(qf.produce, (link, 20))
        producer.get(GET)
        assert consumer.get(GET) == list(range(20))


def test_a_bounded_queue_holds_its_producer_back(start_method: str, queues: list) -> None:
    q, log = _new(queues, maxsize=1), _new(queues)
    with procpool.Pool(1, context=start_method) as pool:
        producer = pool.apply_async(qf.put_logging, (q, log, 3))
        assert log.get(timeout=GET) == 0  # the first put fits
        with pytest.raises(queue.Empty):  # the second waits for room
            log.get(timeout=0.2)
        assert q.full()
        assert q.get(timeout=GET) == 0
        assert log.get(timeout=GET) == 1
        assert [q.get(timeout=GET), q.get(timeout=GET)] == [1, 2]
        producer.get(GET)


def test_timeouts_raise_empty_and_full(start_method: str, queues: list) -> None:
    empty, full = _new(queues), _new(queues, maxsize=1)
    full.put("only")
    with pytest.raises(queue.Empty):
        empty.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        empty.get_nowait()
    with pytest.raises(queue.Full):
        full.put("more", timeout=0.01)
    with pytest.raises(ValueError, match="non-negative"):
        empty.get(timeout=-1)
    with procpool.Pool(1, context=start_method) as pool:
        assert pool.apply(qf.try_empty_and_full, (empty, full)) == ("empty", "full")


def test_items_put_before_a_worker_is_killed_are_kept(start_method: str, queues: list) -> None:
    q = _new(queues)
    with procpool.Pool(1, context=start_method) as pool:
        dead = pool.apply_async(qf.put_then_die, (q, 200))
        with pytest.raises(procpool.WorkerLostError):
            dead.get(GET)
        assert [q.get(timeout=GET) for _ in range(200)] == list(range(200))


def test_a_consumer_killed_in_get_loses_nothing(start_method: str, queues: list) -> None:
    q, log = _new(queues), _new(queues)
    with procpool.Pool(1, context=start_method) as pool:
        blocked = pool.apply_async(qf.block_in_get, (q, log))
        os.kill(log.get(timeout=GET), signal.SIGKILL)
        with pytest.raises(procpool.WorkerLostError):
            blocked.get(GET)
        q.put("kept")
        assert q.get(timeout=GET) == "kept"
        assert pool.apply(qf.report_progress, (q, 1)) == 1  # the queue still works
        assert q.get(timeout=GET) == ("progress", 0)


def test_a_closed_queue_says_so_everywhere(start_method: str) -> None:
    q = procpool.Queue()
    with procpool.Pool(1, context=start_method) as pool:
        q.close()
        with pytest.raises(ValueError, match="closed"):
            q.put(1)
        message = pool.apply(qf.use_closed, (q,))
    assert "closed" in message or "gone" in message


def test_a_plain_process_under_spawn(queues: list) -> None:
    q = _new(queues)
    process = multiprocessing.get_context("spawn").Process(target=qf.put_in_process, args=(q,))
    process.start()
    assert q.get(timeout=GET) == "from a Process"
    process.join(GET)
    assert process.exitcode == 0


def test_items_a_killed_consumer_took_ahead_go_back(start_method: str, queues: list) -> None:
    """A consumer that gets in a fast loop is sent items in batches; those get() had not
    returned when it was killed go back to the queue: every item once, none lost."""
    q, log = _new(queues), _new(queues)
    for i in range(300):
        q.put(i)
    with procpool.Pool(1, context=start_method) as pool:
        dead = pool.apply_async(qf.take_some_then_die, (q, log, 40))
        with pytest.raises(procpool.WorkerLostError):
            dead.get(GET)
    consumed = [log.get(timeout=GET) for _ in range(40)]
    rest = [q.get(timeout=GET) for _ in range(260)]
    assert sorted(consumed + rest) == list(range(300))
    assert q.empty()
