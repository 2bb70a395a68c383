"""Manager proxies as task arguments, as the tutorial uses them: a counter under a
shared lock, a dict many tasks fill, a Namespace, a list and a queue. Proxies pickle
to their manager's address, so they work under every start method, with Pool and
Executor alike."""

from __future__ import annotations

import multiprocessing

import procpool
import share_funcs as sf
from proc_utils import GET


def test_a_counter_under_a_lock_and_a_dict_filled_by_many_tasks(start_method: str) -> None:
    context = multiprocessing.get_context(start_method)
    with context.Manager() as manager:
        counter = manager.Value("i", 0)
        lock = manager.Lock()
        squares = manager.dict()
        with procpool.Pool(2, context=start_method) as pool:
            adders = [pool.apply_async(sf.add_under_lock, (counter, lock, 25)) for _ in range(4)]
            filled = pool.starmap(sf.fill, [(squares, i) for i in range(20)])
            for adder in adders:
                adder.get(GET)
        assert counter.value == 100  # no increment lost: each was under the lock
        assert filled == list(range(20))
        assert dict(squares) == {i: i * i for i in range(20)}


def test_namespace_list_and_queue_with_the_executor(start_method: str) -> None:
    context = multiprocessing.get_context(start_method)
    with context.Manager() as manager:
        namespace = manager.Namespace()
        items = manager.list()
        messages = manager.Queue()
        with procpool.Executor(2, mp_context=context) as executor:
            futures = [executor.submit(sf.record, namespace, items, messages, i) for i in range(6)]
            for future in futures:
                future.result(GET)
        assert sorted(items) == list(range(6))
        received = sorted(messages.get(timeout=GET) for _ in range(6))
        assert received == [("done", i) for i in range(6)]
        assert namespace.last in range(6)
