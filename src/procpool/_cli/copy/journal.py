"""The resume journal of a chunked file: which chunks of its part file are written.

``.NAME.procpool.journal`` sits beside the part file ``.NAME.procpool.part``. Its first
line identifies the source and the chunking (size, mtime, inode, chunk size) as JSON;
each further line is the index of a chunk whose worker had finished writing it when the
parent recorded it. A rerun after a crash, a SIGKILL or a Ctrl-C that finds the same
first line copies only the chunks not listed; any other first line (the source changed,
another --chunk-size) starts the part file over. A line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import os
from typing import Any

_O_JOURNAL = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


def header(st: os.stat_result, chunk_size: int) -> dict[str, Any]:
    """What must not change between the run that started a part file and a resume."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "dev": st.st_dev,
            "ino": st.st_ino, "chunk_size": chunk_size}  # fmt: skip


class Journal:
    """The journal of one part file, open for appending."""

    def __init__(self, path: str, fd: int, fsync: bool) -> None:
        self.path = path
        self._fd = fd
        self._fsync = fsync

    @classmethod
    def open(
        cls, part: str, path: str, head: dict[str, Any], fsync: bool
    ) -> tuple[Journal, set[int]]:
        """Open (or start) the journal; returns it and the chunks already written."""
        done = _read(part, path, head)
        if done is None:
            _start(part, path, head)
            done = set()
        return cls(path, os.open(path, _O_JOURNAL), fsync), done

    def record(self, index: int) -> None:
        os.write(self._fd, b"%d\n" % index)
        if self._fsync:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _read(part: str, path: str, head: dict[str, Any]) -> set[int] | None:
    """The chunks listed, or None when there is no usable journal for this source."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        if not os.path.isfile(part) or os.path.getsize(part) != head["size"]:
            return None
        if json.loads(lines[0]) != head:
            return None
    except (OSError, ValueError):
        return None
    # The last element is what follows the last newline: empty, or a line cut short.
    return {int(line) for line in lines[1:-1] if line.isdigit()}


def _start(part: str, path: str, head: dict[str, Any]) -> None:
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)  # fmt: skip
    try:
        os.ftruncate(fd, head["size"])
    finally:
        os.close(fd)
    with open(path, "wb") as f:
        f.write(json.dumps(head).encode() + b"\n")
