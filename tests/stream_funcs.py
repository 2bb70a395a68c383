"""Streaming task functions for tests/api/test_stream.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any


def count_to(n: int) -> Iterator[tuple[int, int]]:
    for i in range(n):
        yield n, i


def first_then_wait(gate: Any) -> Iterator[str]:
    """Yield, then wait for the parent (which has already received the first value)."""
    yield "first"
    gate.wait()
    yield "second"


def fail_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"failed after {n}")


def die_after(n: int) -> Iterator[int]:
    yield from range(n)
    os._exit(7)


def yield_then_block(gate: Any) -> Iterator[int]:
    yield 1
    gate.wait()  # never set: the parent closes the stream
    yield 2


def plain_list(n: int) -> list[int]:
    return list(range(n))
