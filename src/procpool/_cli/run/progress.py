"""What ``procpool run`` shows on stderr: a live progress line and the final summary.

On a terminal the line is redrawn in place (``\\r``) at most ten times a second, and
once a second with no arrivals so the rate and ETA stay current. With
``--progress always`` on a non-terminal (a log file, a test), a plain line is printed
after a commit at most once a second: its counts are then exactly what is stored.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

_TTY_REDRAW = 0.1
_TTY_TICK = 1.0
_LINES_EVERY = 1.0
_SLOWEST = 3


def duration(seconds: float) -> str:
    """``<0.1 ms``, ``4.2 ms``, ``420 ms``, ``4.20 s``, ``12.3 s``, ``4m05s``, ``2h03m``."""
    if seconds < 0.0001:
        return "<0.1 ms"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class Tally:
    """This run's counts, and what the summary reports about its tasks."""

    done: int = 0
    failed: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    total: int | None = None
    error_types: Counter[str] = field(default_factory=Counter)
    slowest: list[tuple[float, int, str]] = field(default_factory=list)

    #: Only a call slower than this can enter ``slowest`` (a cheap test per call).
    slow_floor: float = -1.0

    def note_duration(self, seconds: float, line: int, text: str) -> None:
        entry = (seconds, line, shorten(text, 40))
        if len(self.slowest) < _SLOWEST:
            heapq.heappush(self.slowest, entry)
        elif seconds > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, entry)
        if len(self.slowest) == _SLOWEST:
            self.slow_floor = self.slowest[0][0]

    def finished(self) -> int:
        """Inputs accounted for: run now or found stored."""
        return self.done + self.failed + self.skipped_done + self.skipped_failed


class Progress:
    """The progress line. ``mode``: ``tty`` (redrawn), ``lines`` (logged) or ``off``."""

    def __init__(self, stream: TextIO, mode: str, started: float) -> None:
        self._stream = stream
        self.mode = mode
        self._started = started
        self._last_draw = 0.0
        self._drawn = False

    def next_tick(self, now: float) -> float | None:
        """When the line wants redrawing even without news (its wait deadline)."""
        return self._last_draw + _TTY_TICK if self.mode == "tty" else None

    def arrived(self, tally: Tally, now: float, force: bool = False) -> None:
        """Results arrived (or a tick passed): redraw a terminal line if it is time."""
        if self.mode == "tty" and (force or now - self._last_draw >= _TTY_REDRAW):
            self._stream.write("\r" + self._text(tally, now) + "\x1b[K")
            self._stream.flush()
            self._last_draw = now
            self._drawn = True

    def committed(self, tally: Tally, now: float) -> None:
        """Rows were committed: log a plain line if it is time."""
        if self.mode == "lines" and now - self._last_draw >= _LINES_EVERY:
            self._stream.write(self._text(tally, now) + "\n")
            self._stream.flush()
            self._last_draw = now

    def clear(self) -> None:
        """Erase the terminal line before other output."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    def _text(self, tally: Tally, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        ran = tally.done + tally.failed
        rate = ran / elapsed
        parts = [f"done {tally.done + tally.skipped_done:,}"]
        if tally.total is not None:
            share = 100 * tally.finished() / tally.total if tally.total else 100.0
            parts[0] += f"/{tally.total:,} ({share:.1f}%)"
        parts.append(f"failed {tally.failed + tally.skipped_failed:,}")
        parts.append(f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s")
        if tally.total is not None and rate > 0:
            parts.append(f"ETA {duration((tally.total - tally.finished()) / rate)}")
        parts.append(f"elapsed {duration(elapsed)}")
        return "procpool run: " + ", ".join(parts)


def summary(tally: Tally, wall: float, jobs: int, db_option: str, how: str) -> list[str]:
    """The closing lines: counts, wall time, throughput, slowest tasks, next steps.

    ``db_option`` is the ``--db PATH`` to show in the suggested commands ("" for the default).
    """
    ran = tally.done + tally.failed
    rate = ran / wall if wall > 0 else 0.0
    if not ran and how == "finished":
        stored = tally.skipped_done + tally.skipped_failed
        if not stored:
            return ["procpool run: nothing to run: the input is empty"]
        return [
            f"procpool run: nothing to run: all {stored:,} inputs are stored already "
            f"({tally.skipped_done:,} done, {tally.skipped_failed:,} failed"
            + ("; rerun failed ones with --retry-failed)" if tally.skipped_failed else ")"),
            f"  results: procpool results{db_option}",
        ]
    lines = [
        f"procpool run: {how} in {duration(wall)}: {tally.done:,} done, {tally.failed:,} failed"
        f" ({rate:,.1f} inputs/s on {jobs} worker{'s' if jobs != 1 else ''})"
    ]
    if tally.skipped_done or tally.skipped_failed:
        lines.append(
            f"  from earlier runs: {tally.skipped_done:,} done, {tally.skipped_failed:,} failed"
            + (" (rerun failed ones with --retry-failed)" if tally.skipped_failed else "")
        )
    if tally.slowest and max(tally.slowest)[0] >= 0.001:  # below 1 ms it is noise
        slow = sorted(tally.slowest, reverse=True)
        items = ", ".join(f"line {line} {duration(s)} {shorten(t, 30)!r}" for s, line, t in slow)
        lines.append(f"  slowest: {items}")
    if tally.error_types:
        kinds = ", ".join(f"{n:,} {name}" for name, n in tally.error_types.most_common(4))
        lines.append(f"  failures: {kinds}; list them: procpool results --failed{db_option}")
    lines.append(f"  results: procpool results{db_option}")
    return lines
