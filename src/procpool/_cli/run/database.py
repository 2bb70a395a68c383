"""The SQLite database of ``procpool run``: schema, the run claim, batched commits.

One row per input in ``results``, keyed by line number (with the sha256 of the line
beside it), and one row per invocation in ``runs``: what was run (target, a hash of
the function's source, the input and its fingerprint, the options), by which process,
its state and counters. Only the parent writes, from its main loop.

Durability: WAL mode with ``synchronous=NORMAL``, so a commit survives the process
being killed (it is in the OS's hands) and the file is never corrupted; a power cut may
lose the last commits, which are then simply rerun. Rows are committed in batches, when
``COMMIT_ROWS`` are waiting or ``COMMIT_INTERVAL`` seconds have passed since the last
commit, checked at each arrival and at a deadline of the main loop's wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = "1"
DEFAULT_DB = "procpool-run.sqlite"
COMMIT_INTERVAL = 0.2
COMMIT_ROWS = 10_000
_START_BUSY_TIMEOUT = 2.0
_RUN_BUSY_TIMEOUT = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS procpool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO procpool_meta VALUES ('schema', '1');
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    function_sha256 TEXT NOT NULL,
    input TEXT NOT NULL,
    input_fingerprint TEXT NOT NULL,
    options TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_token TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    total INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    message TEXT
);
CREATE TABLE IF NOT EXISTS results (
    line INTEGER PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result TEXT,
    result_format TEXT CHECK (result_format IN ('json', 'repr')),
    error_type TEXT,
    error_message TEXT,
    traceback TEXT,
    attempts INTEGER NOT NULL,
    worker_pid INTEGER,
    started_at REAL,
    ended_at REAL,
    duration REAL,
    run_id INTEGER NOT NULL
);
"""

#: The columns of ``results``, in order: what a row tuple holds.
RESULT_COLUMNS = (
    "line", "input_sha256", "input", "status", "result", "result_format", "error_type",
    "error_message", "traceback", "attempts", "worker_pid", "started_at", "ended_at",
    "duration", "run_id",
)  # fmt: skip
_INSERT = f"INSERT OR REPLACE INTO results VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"


class DbError(Exception):
    """The database cannot be opened, claimed or written; the message says why."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What this invocation runs: compared with the previous run to report changes."""

    target: str
    function_sha256: str
    input: str
    input_fingerprint: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Counts:
    """This run's counters, stored in its ``runs`` row at each commit."""

    done: int
    failed: int
    skipped: int
    total: int | None


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of starting a run: its id, the run before it, what is stored."""

    run_id: int
    previous: sqlite3.Row | None
    stored_done: int
    stored_failed: int


def explain(exc: sqlite3.Error, path: str) -> str:
    """A user-facing sentence for an SQLite error on the database at ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"the database {path} is locked by another process (an open transaction in "
            f"another program?); try again when it is done, or use another --db"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return f"cannot write the database {path}: {exc} (is it, and its directory, writable?)"
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        return (
            f"cannot write the database {path}: {exc} (is the disk full?). Results "
            f"committed so far are safe: free some space and run the same command to resume"
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return f"{path} is not a usable SQLite database ({exc}); choose another --db"
    return f"database error on {path}: {exc}"


def process_token(pid: int) -> str:
    """The process's start time (from /proc), so a reused pid is not mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2 :].split()[19].decode()


def run_is_alive(run: sqlite3.Row) -> bool:
    """Whether the process that recorded ``run`` is still running it."""
    if run["state"] != "running" or run["host"] != socket.gethostname():
        return False
    pid = run["pid"]
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not run["pid_token"] or process_token(pid) == run["pid_token"]


def _connect(target: str, uri: bool, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(target, timeout=timeout, isolation_level=None, uri=uri)
    conn.row_factory = sqlite3.Row
    return conn


class RunDB:
    """The run database, opened for one ``procpool run`` (writer) or a reader."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.run_id = 0
        self._pending: list[tuple[Any, ...]] = []
        self._last_commit = time.monotonic()

    # -- opening

    @classmethod
    def open_for_run(cls, path: str) -> RunDB:
        """Open (creating if needed) in WAL mode and check it is a procpool run database."""
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise DbError(f"{path} is a directory, not a database file")
        if not os.path.isdir(directory):
            raise DbError(f"cannot create the database {path}: no directory {directory}")
        db = cls._opened(path, path, False)
        with db._closed_on_error():
            db._check_schema(create=True)
            db.conn.execute("PRAGMA journal_mode=WAL")
            db.conn.execute("PRAGMA synchronous=NORMAL")
        return db

    @classmethod
    def open_for_reading(cls, path: str) -> RunDB:
        """Open an existing database read-only (never creates one)."""
        if not os.path.isfile(path):
            raise DbError(f"no database at {path} (run `procpool run` first, or pass --db)")
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
        db = cls._opened(uri, path, True)
        with db._closed_on_error():
            db._check_schema(create=False)
        return db

    @classmethod
    def _opened(cls, target: str, path: str, uri: bool) -> RunDB:
        try:
            return cls(_connect(target, uri, _START_BUSY_TIMEOUT), path)
        except sqlite3.Error as exc:
            raise DbError(explain(exc, path)) from None

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """Close the connection if the block fails (3.13 warns of a connection left to
        the collector); an sqlite3 error becomes a DbError."""
        try:
            yield
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.Error):
                raise DbError(explain(exc, self.path)) from None
            raise

    def _check_schema(self, create: bool) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        if "procpool_meta" not in tables:
            if tables or not create:
                raise DbError(f"{self.path} is not a procpool run database; choose another --db")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
            return
        row = self.conn.execute("SELECT value FROM procpool_meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise DbError(f"{self.path} was made by another version of procpool run")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    # -- starting a run

    def start_run(self, info: RunInfo, fresh: bool) -> Claim:
        """Record a new run, refusing when a live run or another function owns the data."""
        try:
            with self._transaction():
                previous = self.latest_run()
                self._check_previous(previous, info, fresh)
                if fresh:
                    self.conn.execute("DELETE FROM results")
                done, failed = self.counts()
                self.run_id = self._insert_run(info)
        except sqlite3.Error as exc:
            raise DbError(explain(exc, self.path)) from None
        self.conn.execute(f"PRAGMA busy_timeout = {int(_RUN_BUSY_TIMEOUT * 1000)}")
        self._last_commit = time.monotonic()
        return Claim(self.run_id, previous, done, failed)

    def _check_previous(self, previous: sqlite3.Row | None, info: RunInfo, fresh: bool) -> None:
        if previous is None:
            return
        if run_is_alive(previous):
            raise DbError(
                f"another procpool run (pid {previous['pid']}, run {previous['id']}) is "
                f"using {self.path}; wait for it to finish, or use another --db"
            )
        if previous["state"] == "running":
            self.conn.execute(
                "UPDATE runs SET state = 'stopped', message = ? WHERE id = ?",
                ("the process ended without finishing (killed?)", previous["id"]),
            )
        if not fresh and previous["target"] != info.target and any(self.counts()):
            raise DbError(
                f"{self.path} holds results of {previous['target']}, not {info.target}; "
                f"use another --db, or --fresh to discard them"
            )

    def _insert_run(self, info: RunInfo) -> int:
        now = time.time()
        cursor = self.conn.execute(
            "INSERT INTO runs (target, function_sha256, input, input_fingerprint, options,"
            " pid, pid_token, host, state, started_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            (
                info.target, info.function_sha256, info.input, info.input_fingerprint,
                json.dumps(info.options, sort_keys=True), os.getpid(),
                process_token(os.getpid()), socket.gethostname(), now, now,
            ),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # -- during the run

    def stored(self, first: int, last: int) -> dict[int, sqlite3.Row]:
        """Stored rows for lines ``first..last``: their key, status and attempts."""
        rows = self.conn.execute(
            "SELECT line, input_sha256, status, attempts FROM results WHERE line BETWEEN ? AND ?",
            (first, last),
        )
        return {row[0]: row for row in rows}

    def add(self, row: tuple[Any, ...]) -> None:
        """Queue a results row; it is written at the next commit."""
        self._pending.append(row)

    def add_many(self, rows: list[tuple[Any, ...]]) -> None:
        self._pending.extend(rows)

    def commit_deadline(self) -> float | None:
        """When the rows waiting must be committed (monotonic time), None if none wait."""
        if not self._pending:
            return None
        return self._last_commit + COMMIT_INTERVAL

    def commit_due(self, now: float) -> bool:
        if not self._pending:
            return False
        return len(self._pending) >= COMMIT_ROWS or now >= self._last_commit + COMMIT_INTERVAL

    def commit(self, counts: Counts, state: str = "running", message: str | None = None) -> None:
        """Write the waiting rows and this run's counters in one transaction."""
        try:
            with self._transaction():
                self.conn.executemany(_INSERT, self._pending)
                self.conn.execute(
                    "UPDATE runs SET done = ?, failed = ?, skipped = ?, total = ?,"
                    " updated_at = ?, state = ?, message = ?,"
                    " ended_at = CASE WHEN ? = 'running' THEN NULL ELSE ? END WHERE id = ?",
                    (counts.done, counts.failed, counts.skipped, counts.total, time.time(),
                     state, message, state, time.time(), self.run_id),
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise DbError(explain(exc, self.path)) from None
        self._pending.clear()
        self._last_commit = time.monotonic()

    def mark_stopped(self, message: str) -> None:
        """Best effort, after a failed commit: record why this run stopped."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(
                "UPDATE runs SET state = 'stopped', message = ?, ended_at = ? WHERE id = ?",
                (message, time.time(), self.run_id),
            )

    # -- reading

    def latest_run(self) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row

    def counts(self) -> tuple[int, int]:
        """(done, failed) rows stored, over all runs."""
        found = dict(self.conn.execute("SELECT status, count(*) FROM results GROUP BY status"))
        return found.get("done", 0), found.get("failed", 0)

    def rows_after(self, line: int) -> int:
        """How many stored rows are for lines past ``line`` (an input that shrank)."""
        row = self.conn.execute("SELECT count(*) FROM results WHERE line > ?", (line,)).fetchone()
        return int(row[0])

    def results(self, failed_only: bool) -> sqlite3.Cursor:
        """The stored rows in line order (iterate the cursor; it raises sqlite3.Error)."""
        where = " WHERE status = 'failed'" if failed_only else ""
        return self.conn.execute(f"SELECT * FROM results{where} ORDER BY line")
