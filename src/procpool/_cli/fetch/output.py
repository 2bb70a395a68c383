"""Where records go, written by the parent as each arrives: a JSONL or text stream,
an SQLite database that makes a rerun resume, and a reorder buffer for ``--ordered``.

The database is the durable one: rows are committed at least every 0.2 s (WAL), keyed
by URL, so a rerun after a crash or ``kill -9`` refetches at most the last 0.2 s and
never stores a URL twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any

FIELDS = (
    "url", "final_url", "status", "bytes", "sha256", "content_type",
    "elapsed_ms", "attempts", "error", "fetched_at",
)  # fmt: skip
COMMIT_EVERY = 0.2


@dataclass(frozen=True, slots=True)
class Record:
    url: str
    final_url: str | None
    status: int | None
    bytes: int
    sha256: str | None
    content_type: str | None
    elapsed_ms: float
    attempts: int
    error: str | None
    fetched_at: str


class OutputError(Exception):
    """A record could not be written (disk full, a closed pipe, a locked database)."""


class StreamOutput:
    """Records as JSON lines, or the tutorial's ``url:… size:…`` lines."""

    def __init__(self, stream: IO[str], fmt: str, label: str) -> None:
        self._stream = stream
        self._fmt = fmt
        self.label = label

    def write(self, record: Record) -> None:
        if self._fmt == "text":
            line = f"url:{record.url} size:{record.bytes}\n"
        else:
            line = json.dumps(asdict(record), separators=(",", ":")) + "\n"
        try:
            self._stream.write(line)
        except OSError as exc:
            raise OutputError(f"cannot write {self.label}: {exc}") from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.label}: {exc}") from exc

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self.label != "stdout":
            self._stream.close()


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS fetched (
    url TEXT PRIMARY KEY, final_url TEXT, status INTEGER, bytes INTEGER, sha256 TEXT,
    content_type TEXT, elapsed_ms REAL, attempts INTEGER, error TEXT, fetched_at TEXT,
    depth INTEGER, links TEXT
);
CREATE VIEW IF NOT EXISTS results AS SELECT {", ".join(FIELDS)} FROM fetched;
"""


class Database:
    """``--db``: one row per URL; what a rerun skips, and a crawl's stored links."""

    def __init__(self, path: str) -> None:
        self.label = path
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise OutputError(f"cannot use {path} as a results database: {exc}") from exc

    def stored(self, retry_failed: bool) -> Iterable[tuple[str, int, str | None]]:
        """(url, depth, links JSON) of the rows a rerun keeps."""
        query = "SELECT url, depth, links FROM fetched"
        if retry_failed:
            query += " WHERE error IS NULL AND status < 500"
        return self._conn.execute(query)

    def forget_failed(self) -> None:
        self._conn.execute("DELETE FROM fetched WHERE error IS NOT NULL OR status >= 500 "
                           "OR status IS NULL")  # fmt: skip

    def write(self, record: Record, depth: int = 0, links: Any = None) -> None:
        row = (*(getattr(record, name) for name in FIELDS), depth, links)
        try:
            self._conn.execute(f"INSERT OR REPLACE INTO fetched VALUES ({','.join('?' * 12)})", row)
        except sqlite3.Error as exc:
            raise OutputError(f"cannot write {self.label}: {exc}") from exc

    def flush(self) -> None:
        try:
            self._conn.execute("COMMIT")
            self._conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise OutputError(f"cannot write {self.label}: {exc}") from exc

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()


class Outputs:
    """Every destination; a failing one is reported once and dropped, the others go on."""

    def __init__(self, streams: list[StreamOutput], db: Database | None, ordered: bool) -> None:
        self._streams = streams
        self.db = db
        self._ordered = ordered
        self._held: dict[int, Record | None] = {}
        self._next = 0
        self.errors: list[str] = []

    def emit(self, index: int, record: Record, depth: int = 0, links: Any = None) -> None:
        if self.db is not None:
            self._guard(self.db, lambda db: db.write(record, depth, links))
        if not self._ordered:
            self._to_streams(record)
            return
        self._held[index] = record
        self._release()

    def skip(self, index: int) -> None:
        """``index`` will have no record (ordered output must not wait for it)."""
        if self._ordered:
            self._held[index] = None
            self._release()

    def _release(self) -> None:
        while self._next in self._held:
            record = self._held.pop(self._next)
            if record is not None:
                self._to_streams(record)
            self._next += 1

    def flush(self) -> None:
        for out in [*self._streams, *([self.db] if self.db else [])]:
            self._guard(out, lambda o: o.flush())

    def close(self) -> None:
        for record in [self._held[i] for i in sorted(self._held)]:
            if record is not None:
                self._to_streams(record)
        self._held.clear()
        for out in [*self._streams, *([self.db] if self.db else [])]:
            self._guard(out, lambda o: o.close())

    def _to_streams(self, record: Record) -> None:
        for stream in list(self._streams):
            self._guard(stream, lambda s: s.write(record))

    def _guard(self, out: Any, action: Any) -> None:
        try:
            action(out)
        except OutputError as exc:
            self.errors.append(str(exc))
            if out is self.db:
                self.db = None
            elif out in self._streams:
                self._streams.remove(out)


def open_stream(path: str, fmt: str, append: bool) -> StreamOutput:
    import sys

    if path == "-":
        return StreamOutput(sys.stdout, fmt, "stdout")
    try:
        stream = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise OutputError(f"cannot open {path} for writing: {exc.strerror}") from exc
    return StreamOutput(stream, fmt, os.fspath(path))
