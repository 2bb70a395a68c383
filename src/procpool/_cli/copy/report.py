"""What ``procpool copy`` tells: notes and errors as they happen, a progress line, the
summary, and ``--stats-json``.

Progress (``--progress``, or a terminal on stderr): bytes and files done of the total,
the rate and an ETA, redrawn in place on a terminal at most ten times a second, else a
plain line at most once a second. Everything goes to stderr; stdout carries only the
``--dry-run`` plan and ``-v`` lines.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, TextIO

from procpool._cli.copy.plan import show

_MAX_LISTED = 1000  # errors kept for --stats-json


def size(n: float) -> str:
    """``512 B``, ``1.5 KiB`` ... ``2.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class Stats:
    """Counts of one run (``--stats-json`` writes them)."""

    files_total: int = 0
    bytes_total: int = 0
    files_copied: int = 0
    bytes_copied: int = 0  # data written this run (holes and resumed chunks not counted)
    bytes_resumed: int = 0  # chunks a journal said were written already
    files_unchanged: int = 0  # same size and mtime (or content, --checksum)
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    fifos: int = 0
    specials_skipped: int = 0
    chunks: int = 0
    verified: int = 0
    mismatches: int = 0
    errors: int = 0
    seconds: float = 0.0
    methods: Counter[str] = field(default_factory=Counter)
    error_list: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["methods"] = dict(self.methods)
        data["errors_listed"] = data.pop("error_list")
        data["bytes_per_second"] = self.bytes_copied / self.seconds if self.seconds else 0.0
        return data


class Reporter:
    """Writes notes, errors and the progress line to stderr, without mixing them."""

    def __init__(self, err: TextIO, progress: bool, stats: Stats) -> None:
        self._err = err
        self._tty = err.isatty()
        self._progress = progress
        self._stats = stats
        self._started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def error(self, path: str, message: str) -> None:
        self._stats.errors += 1
        if len(self._stats.error_list) < _MAX_LISTED:
            self._stats.error_list.append({"path": show(path), "error": message})
        self.line(f"procpool copy: {show(path)}: {message}")

    def note(self, path: str, message: str) -> None:
        self.line(f"procpool copy: note: {show(path)}: {message}")

    def line(self, text: str) -> None:
        self.clear()
        print(text, file=self._err, flush=True)

    def tick(self, force: bool = False) -> None:
        """Redraw the progress line if it is time."""
        if not self._progress:
            return
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self._tty else 1.0):
            return
        self._last = now
        text = self._text(now)
        if self._tty:
            self._err.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self._err.write(text + "\n")
        self._err.flush()

    def clear(self) -> None:
        if self._drawn:
            self._err.write("\r\x1b[K")
            self._err.flush()
            self._drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _text(self, now: float) -> str:
        s = self._stats
        elapsed = max(now - self._started, 1e-9)
        done = s.bytes_copied + s.bytes_resumed
        rate = s.bytes_copied / elapsed
        eta = f", ETA {max(s.bytes_total - done, 0) / rate:.0f} s" if rate > 0 else ""
        files = s.files_copied + s.files_unchanged
        return (f"procpool copy: {size(done)}/{size(s.bytes_total)}, {files:,}/"
                f"{s.files_total:,} files, {size(rate)}/s{eta}")  # fmt: skip


def summary(stats: Stats, how: str, dry_run: bool) -> str:
    """The closing line (stderr)."""
    s = stats
    if dry_run:
        return (f"procpool copy: dry run: would copy {s.files_total - s.files_unchanged:,} files "
                f"({size(s.bytes_total)}); {s.files_unchanged:,} unchanged")  # fmt: skip
    rate = s.bytes_copied / s.seconds if s.seconds > 0 else 0.0
    parts = [f"{s.files_copied:,} files copied ({size(s.bytes_copied)}, {size(rate)}/s)"]
    for count, label in ((s.files_unchanged, "unchanged"), (s.bytes_resumed, "bytes resumed"),
                         (s.dirs, "directories"), (s.symlinks, "symlinks"),
                         (s.hardlinks, "hardlinks"), (s.fifos, "FIFOs"),
                         (s.specials_skipped, "sockets/devices skipped"),
                         (s.verified, "files/chunks verified"), (s.mismatches, "MISMATCHED"),
                         (s.errors, "errors")):  # fmt: skip
        if count:
            parts.append(f"{count:,} {label}")
    return f"procpool copy: {how} in {s.seconds:.2f} s: " + ", ".join(parts)


def write_stats(stats: Stats, path: str, out: TextIO) -> None:
    """``--stats-json PATH`` (``-`` for stdout)."""
    text = json.dumps(stats.as_json(), indent=2, sort_keys=True)
    if path == "-":
        print(text, file=out)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
