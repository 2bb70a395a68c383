"""How maps cut their input (no processes: the function is pure)."""

from __future__ import annotations

import pytest

from procpool._api.chunks import chunk_bounds


@pytest.mark.parametrize("processes", [1, 2, 8])
@pytest.mark.parametrize("length", [0, 1, 7, 1000, 123_457, 1_000_000])
def test_guided_chunks_cover_the_input_once_big_first(length: int, processes: int) -> None:
    bounds = chunk_bounds(None, length, processes)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(length))
    sizes = [stop - start for start, stop in bounds]
    assert all(size > 0 for size in sizes)
    assert sizes == sorted(sizes, reverse=True)
    if length:
        assert sizes[0] == -(-length // (4 * processes))
        smallest = max(1, length // (64 * processes))
        assert all(size >= smallest for size in sizes[:-1])
        assert len(sizes) <= 4 * processes * 3 + 64  # ln(16) < 3


def test_a_million_items_on_two_workers_take_a_few_dozen_chunks() -> None:
    """Not the ~110 of plain guided sizes, whose tail of tiny chunks costs a round
    trip each."""
    assert len(chunk_bounds(None, 1_000_000, 2)) < 40


def test_an_explicit_chunksize_is_kept() -> None:
    assert chunk_bounds(3, 10, 2) == [(0, 3), (3, 6), (6, 9), (9, 10)]
