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
