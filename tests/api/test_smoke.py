"""The engine's basic paths, on every start method."""

from __future__ import annotations

import procpool


def square(x: int) -> int:
    return x * x


def test_apply_map_imap(start_method: str) -> None:
    with procpool.Pool(2, context=start_method) as pool:
        assert pool.apply(square, (7,)) == 49
        assert pool.map(square, range(20)) == [x * x for x in range(20)]
        assert list(pool.imap(square, range(10))) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]
        assert pool.apply_async(lambda: 42).get(timeout=30) == 42


def test_bursts_from_many_threads_all_complete() -> None:
    """Submit bursts race the scheduler's wake-up; none may be stranded."""
    import threading

    with procpool.Pool(2) as pool:
        errors: list[BaseException] = []

        def burst(offset: int) -> None:
            try:
                for round_ in range(20):
                    results = [pool.apply_async(square, (offset + i,)) for i in range(50)]
                    got = [r.get(timeout=30) for r in results]
                    assert got == [(offset + i) ** 2 for i in range(50)], round_
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=burst, args=(k * 1000,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
