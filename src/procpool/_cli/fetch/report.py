"""What ``procpool fetch`` tells on stderr: a progress line and the closing summary."""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from procpool._cli.fetch.output import Record

_REDRAW = 0.2
_LINES_EVERY = 1.0


def status_class(record: Record) -> str:
    """``2xx``..``5xx``, ``truncated``, ``robots`` or ``error`` for the summary's counts."""
    if record.status is not None and record.error and record.error.startswith("truncated"):
        return "truncated"
    if record.status is not None:
        return f"{record.status // 100}xx"
    if record.error and "robots.txt" in record.error:
        return "robots"
    return "error"


@dataclass
class Stats:
    classes: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0

    def add(self, record: Record) -> None:
        kind = status_class(record)
        self.classes[kind] += 1
        self.bytes += record.bytes
        if record.status is not None:
            self.latencies.append(record.elapsed_ms)
        if kind in ("error", "4xx", "5xx") or (kind == "3xx" and record.error):
            self.failed += 1

    @property
    def records(self) -> int:
        return sum(self.classes.values())


def _percentile(values: array[float], share: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def summary(stats: Stats, wall: float, how: str) -> list[str]:
    rate = stats.records / wall if wall > 0 else 0.0
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(stats.classes.items())) or "nothing"
    lines = [
        f"procpool fetch: {how} in {wall:.2f} s: {stats.records:,} records ({kinds}); "
        f"{stats.bytes:,} bytes; {rate:,.1f} pages/s"
    ]
    if stats.latencies:
        p50 = _percentile(stats.latencies, 0.50)
        p95 = _percentile(stats.latencies, 0.95)
        lines.append(f"  latency: p50 {p50:,.1f} ms, p95 {p95:,.1f} ms")
    if stats.skipped or stats.duplicates:
        lines.append(
            f"  skipped: {stats.skipped:,} already in the database, "
            f"{stats.duplicates:,} duplicate lines"
        )
    return lines


class Progress:
    """``tty``: one line redrawn in place; ``lines``: a plain line a second; ``off``."""

    def __init__(self, stream: TextIO, mode: str, started: float) -> None:
        self._stream = stream
        self.mode = mode
        self._started = started
        self._last = 0.0
        self._drawn = False

    def update(self, stats: Stats, inflight: int, waiting: int, now: float) -> None:
        every = _REDRAW if self.mode == "tty" else _LINES_EVERY
        if self.mode == "off" or now - self._last < every:
            return
        self._last = now
        rate = stats.records / max(now - self._started, 1e-9)
        text = (
            f"procpool fetch: {stats.records:,} done, {stats.failed:,} failed, "
            f"{inflight} in flight, {waiting:,} queued, {rate:,.1f} pages/s"
        )
        if self.mode == "tty":
            self._stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
