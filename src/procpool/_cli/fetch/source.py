"""The URLs to fetch, read by a thread so that a slow stdin never stalls the loop.

Lines are streamed through a bounded queue: a million-line file is never held in
memory, and the reader blocks when the scheduler has enough queued. Blank lines and
``#`` comments are skipped; the loop removes duplicates.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import IO

_QUEUE = 4096
END = None


class SourceError(Exception):
    pass


class Source:
    """A thread reading ``path`` (or stdin for ``-``) into a bounded queue."""

    def __init__(self, path: str, wake: Callable[[], None]) -> None:
        self.label = "stdin" if path == "-" else path
        self._stream = _open(path)
        self._wake = wake
        self.lines: queue.Queue[str | None] = queue.Queue(_QUEUE)
        self._stop = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, name="procpool-fetch-input", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if not self._put(line):
                    return
        except (OSError, UnicodeDecodeError) as exc:
            self.error = f"cannot read {self.label}: {exc}"
        self._put(END)

    def _put(self, item: str | None) -> bool:
        self.lines.put(item)
        self._wake()
        return not self._stop.is_set()

    def stop(self) -> None:
        """Stop reading and wait for the thread (not for stdin, which may never end)."""
        self._stop.set()
        self._drain()  # a put blocked on a full queue now completes, and sees the flag
        if self._stream is not sys.stdin and self._thread.is_alive():
            self._thread.join()
        if self._stream is not sys.stdin:
            self._stream.close()

    def _drain(self) -> None:
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                return


def _open(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
