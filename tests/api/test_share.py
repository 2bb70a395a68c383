"""``pool.share(obj)``: a big read-only object sent to each worker at most once.

The handle stands for the object wherever it sits in a task's arguments; each
worker attaches it once (the same object for every task it runs); large buffers are
mapped read-only from shared memory; the memory goes with the handle or the pool.
"""

from __future__ import annotations

import os
import pickle
from collections import defaultdict

import numpy as np
import pytest

import procpool
import share_funcs as sf
from proc_utils import GET


def _ids_per_worker(results: list[tuple[int, int, object]]) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = defaultdict(set)
    for pid, ident, _ in results:
        seen[pid].add(ident)
    return seen


def _memfds() -> int:
    """How many of this process's descriptors are procpool memfds."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:procpool")
        except OSError:
            pass
    return count


def test_each_worker_gets_the_object_once_wherever_the_handle_is(start_method: str) -> None:
    table = {"table": list(range(10)), "blob": b"x" * (2 << 20)}
    with procpool.Pool(2, context=start_method) as pool:
        handle = pool.share(table)
        direct = pool.starmap(sf.describe, [(handle, "table/3")] * 40, chunksize=1)
        deep = [pool.apply_async(sf.nested, ({"items": [handle]},)) for _ in range(10)]
        by_kw = pool.apply(sf.describe, (), {"obj": handle, "path": "table/4"})
        results = direct + [r.get(GET) for r in deep]
    assert {value for _, _, value in results} == {3}
    assert by_kw[2] == 4
    # One object per worker, whatever the number of tasks it ran.
    assert all(len(ids) == 1 for ids in _ids_per_worker([*results, by_kw]).values())


def test_the_handle_is_small_and_the_array_arrives_read_only(start_method: str) -> None:
    arr = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    with procpool.Pool(2, context=start_method) as pool:
        handle = pool.share(arr)
        assert len(pickle.dumps(handle)) < 1000
        value, writeable, wrote = pool.apply(sf.array_info, (handle, 12345))
    assert value == 12345.0
    assert not writeable
    assert "read-only" in wrote


def test_a_big_pickle_without_buffers_and_a_lambda_inside(start_method: str) -> None:
    words = [f"word{i}" for i in range(200_000)]  # a pickle of several MB, all in band
    with procpool.Pool(2, context=start_method) as pool:
        big = pool.share({"words": words})
        fn = pool.share(lambda x: x + 1)  # cloudpickled
        assert pool.apply(sf.describe, (big, "words/199999"))[2] == "word199999"
        assert pool.apply(sf.call, (fn, 41)) == 42


def test_in_the_parent_the_handle_is_the_object() -> None:
    with procpool.Pool(1) as pool:
        obj = {"a": 1}
        handle = pool.share(obj)
        assert pickle.loads(pickle.dumps(handle)) is obj
        assert handle.value is obj


def test_release_frees_the_memory_and_later_tasks_fail_clearly(start_method: str) -> None:
    before = _memfds()
    with procpool.Pool(2, context=start_method) as pool:
        handle = pool.share(np.ones(1 << 20))
        assert _memfds() == before + 1
        assert pool.apply(sf.describe, (handle, "7"))[2] == 1.0
        handle.release()
        assert _memfds() == before
        assert handle.released and "released" in repr(handle)
        with pytest.raises(ValueError, match="released"):
            pool.apply(sf.describe, (handle,))
        # The workers let go of a released object when they attach the next one.
        again = pool.share(np.zeros(1 << 20))
        assert pool.apply(sf.describe, (again, "7"))[2] == 0.0
        assert pool.apply(sf.objects_held, (again,)) == 1
    assert again.released  # the pool released what it shared
    assert _memfds() == before


def test_join_releases_what_the_pool_shared() -> None:
    pool = procpool.Pool(2)
    handle = pool.share(np.ones(1 << 20))
    assert pool.apply(sf.describe, (handle, "0"))[2] == 1.0
    pool.close()
    pool.join()
    assert handle.released


def test_a_worker_killed_while_holding_it_fails_alone(start_method: str) -> None:
    with procpool.Pool(1, context=start_method) as pool:
        handle = pool.share(list(range(1000)))
        dead = pool.apply_async(sf.die_after_reading, (handle,))
        with pytest.raises(procpool.WorkerLostError):
            dead.get(GET)
        # The replacement attaches it again.
        assert pool.apply(sf.describe, (handle, "999"))[2] == 999


def test_executor_share(start_method: str) -> None:
    import multiprocessing

    context = multiprocessing.get_context(start_method)
    with procpool.Executor(2, mp_context=context) as executor:
        handle = executor.share({"k": [1, 2, 3]})
        futures = [executor.submit(sf.describe, handle, "k/2") for _ in range(8)]
        results = [f.result(GET) for f in futures]
    assert {value for _, _, value in results} == {3}
    assert all(len(ids) == 1 for ids in _ids_per_worker(results).values())
    assert handle.released


def test_share_needs_a_running_pool() -> None:
    pool = procpool.Pool(1)
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.share(1)
    pool.join()
