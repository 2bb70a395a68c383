"""``procpool run``: a durable, resumable parallel map of a function over many inputs.

::

    reader thread              main thread (the only one touching the database)     workers
    ─────────────              ─────────────────────────────────────────────────     ───────
    Source ──InputBatch──▶ ┐
    pool callback thread   ├─▶ inbox ─▶ one wait (pipe), deadline = next commit/redraw
      ──Outcome──────────▶ ┤          ├─ accept: skip inputs stored under the same key
    SIGINT/SIGTERM ─wakeup─┘          ├─ submit: chunk ─ Pool.apply_async(run_chunk) ─▶ run
                                      ├─ record: rows ◀── callback/error_callback ───── each
                                      └─ commit: RunDB (>= 10,000 rows or 0.2 s)

**Accept.** Input arrives in batches from the reader thread. Each input's key is its line
number and the sha256 of its text: one stored as done (or failed, unless
``--retry-failed``) under the same key is skipped; bad input (invalid JSON or UTF-8) is
stored as failed without running.

**Submit.** Inputs go to the pool in chunks through the public ``apply_async``, at most
``3 x jobs`` chunks in flight. A chunk's size aims at about 50 ms of work, from the
measured time per call (doubling at most per chunk, 1 while nothing is measured), unless
``--chunksize`` fixes it.

**Record.** Callbacks only post the outcome to the inbox; the main thread turns it into
rows. A chunk whose worker died or that timed out is rerun one input at a time, so only
the culprit fails; a single input that dies or times out is retried ``--retries`` times,
then stored as failed with WorkerLostError or TaskTimeoutError.

**Stop.** Ctrl-C (or SIGTERM) only sets a flag and wakes the wait; the loop then stops
submitting, terminates the pool (which cancels what runs), stores every outcome that
arrived, commits and exits 130 (143). A SIGKILL loses at most the uncommitted rows; the
next run finds their inputs missing and runs them again.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

# The library only through its public API, as any user would use it.
from procpool import (
    CancelledError,
    Pool,
    PoolBrokenError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerLostError,
)
from procpool._cli import CommandError
from procpool._cli.inbox import Inbox
from procpool._cli.run.database import DEFAULT_DB, Counts, RunDB
from procpool._cli.run.input import InputBatch, InputEnd, InputTotal, Item, Reader, Source
from procpool._cli.run.progress import Progress, Tally, summary
from procpool._cli.run.target import (
    ERROR,
    CallError,
    ChunkOutcome,
    TargetSpec,
    run_chunk,
    type_name,
)

_TARGET_CHUNK_SECONDS = 0.05
_MAX_CHUNK = 1024
_LOW_WATER = 4 * _MAX_CHUNK


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stops and stores what finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True, slots=True)
class RunOptions:
    """``procpool run``'s options, validated."""

    jobs: int
    json: bool
    task_timeout: float | None
    retries: int
    chunksize: int | None
    start_method: str | None
    retry_failed: bool
    backend: str = "local"  # or "dask"
    address: str | None = None  # a Dask scheduler's (else a LocalCluster of its own)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A chunk's result (``ok``) or exception, posted by the pool's callback thread."""

    items: list[Item]
    ok: bool
    value: Any


class Chunker:
    """Sizes chunks to about 50 ms of work each, or ``--chunksize`` exactly."""

    def __init__(self, fixed: int | None, jobs: int) -> None:
        self._fixed = fixed
        self._jobs = jobs
        self._size = 1
        self.mean: float | None = None

    def size(self, remaining: int | None) -> int:
        if self._fixed is not None:
            return self._fixed
        want = 1
        if self.mean is not None:
            want = int(min(_MAX_CHUNK, _TARGET_CHUNK_SECONDS / max(self.mean, 1e-7)))
        want = max(1, min(want, 2 * self._size))
        if remaining is not None:  # keep every worker busy to the end
            want = min(want, max(1, remaining // (2 * self._jobs)))
        self._size = want
        return want

    def observe(self, outcome: ChunkOutcome) -> None:
        if outcome.durations:
            mean = sum(outcome.durations) / len(outcome.durations)
            self.mean = mean if self.mean is None else 0.7 * self.mean + 0.3 * mean

    def timeout(self, n: int, task_timeout: float | None) -> float | None:
        """A chunk's time limit: one call's, plus twice the expected time of the others."""
        if task_timeout is None:
            return None
        return task_timeout + 2 * (n - 1) * (self.mean or 0.0)


class Runner:
    """One ``procpool run``: the main loop described in the module docstring."""

    def __init__(
        self, spec: TargetSpec, source: Source, db: RunDB, options: RunOptions, err: TextIO
    ) -> None:
        # The progress line starts off; the caller sets ``progress.mode``.
        self.spec = spec
        self.opts = options
        self.db = db
        self.err = err
        self.tally = Tally()
        self.started = time.monotonic()
        self.progress = Progress(err, "off", self.started)
        self.stop_reason: str | None = None
        self._inbox = Inbox()
        self._reader = Reader(source, self._inbox.post)
        self._chunker = Chunker(options.chunksize, options.jobs)
        self._ready: deque[Item] = deque()
        self._retry: deque[list[Item]] = deque()
        self._max_inflight = max(4, 3 * options.jobs)
        self._inflight = 0
        self._lines_read = 0
        self._input_done = False
        self._owed_permits = 0
        self._check_stored = True

    def execute(self, check_stored: bool) -> str:
        """Run to the end; returns how it ended: ``finished``, ``interrupted`` or
        ``stopped`` (the input could not be read to its end, or the pool broke:
        ``stop_reason`` says why).

        Raises DbError when the database cannot be written (after stopping the pool).
        """
        self._check_stored = check_stored
        pool = make_pool(self.opts)
        try:
            with self._inbox.catching_signals():
                self._reader.start()
                self._loop(pool)
                pool.close()
                pool.join()
        except Interrupted:
            self._stop(pool)
            return "interrupted"
        except PoolBrokenError as exc:  # e.g. workers that die before they are ready
            self._stop(pool)
            self.stop_reason = f"the worker pool broke: {exc}"
            return "stopped"
        except BaseException:
            self._stop(pool)
            raise
        finally:
            self._reader.stop()
        return "stopped" if self.stop_reason is not None else "finished"

    def interrupt_status(self) -> int:
        return 128 + (self._inbox.signal or signal.SIGINT)

    def counts(self) -> Counts:
        t = self.tally
        return Counts(t.done, t.failed, t.skipped_done + t.skipped_failed, t.total)

    # -- the loop

    def _loop(self, pool: Pool) -> None:
        while True:
            self._submit(pool)
            if self._finished():
                return
            self._inbox.wait(self._timeout())
            for event in self._inbox.take():
                self._handle(event)
            if self._inbox.signal:
                raise Interrupted(self._inbox.signal)
            self._after_events()

    def _finished(self) -> bool:
        return (
            self._input_done and not self._inflight and not self._retry and not self._ready
        )

    def _timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [self.db.commit_deadline(), self.progress.next_tick(now)]
        due = [d for d in deadlines if d is not None]
        return max(0.0, min(due) - now) if due else None

    def _after_events(self) -> None:
        now = time.monotonic()
        if self.db.commit_due(now):
            self.db.commit(self.counts())
            self.progress.committed(self.tally, now)
        self.progress.arrived(self.tally, now)

    def _stop(self, pool: Pool) -> None:
        """Stop the workers, then record whatever had already finished."""
        pool.terminate()
        for event in self._inbox.take():
            if isinstance(event, Outcome) and event.ok:
                self._record(event.items, event.value)

    # -- events

    def _handle(self, event: object) -> None:
        if isinstance(event, Outcome):
            self._inflight -= 1
            self._on_outcome(event)
        elif isinstance(event, InputBatch):
            self._owed_permits += 1
            self._accept(event.items)
        elif isinstance(event, InputTotal):
            self.tally.total = event.count
        elif isinstance(event, InputEnd):
            self._input_done = True
            if event.error is not None:
                self.stop_reason = event.error
            if event.error is None and self.tally.total is None:  # stdin: now it is known
                self.tally.total = self._lines_read

    def _accept(self, items: list[Item]) -> None:
        """Queue new inputs, skipping those already stored under the same key."""
        self._lines_read = items[-1].line
        stored = self.db.stored(items[0].line, items[-1].line) if self._check_stored else {}
        tally = self.tally
        for item in items:
            row = stored.get(item.line)
            if row is not None and row["input_sha256"] == item.sha:
                if row["status"] == "done":
                    tally.skipped_done += 1
                    continue
                if not self.opts.retry_failed:
                    tally.skipped_failed += 1
                    continue
                item.prior_attempts = row["attempts"]
            if item.error is not None:
                self._store_failure(item, item.error, None)
            else:
                self._ready.append(item)

    def _submit(self, pool: Pool) -> None:
        while self._inflight < self._max_inflight:
            items = self._next_chunk()
            if not items:
                break
            self._send(pool, items)
        while self._owed_permits and len(self._ready) < _LOW_WATER:
            self._owed_permits -= 1
            self._reader.consumed()

    def _next_chunk(self) -> list[Item]:
        if self._retry:
            return self._retry.popleft()
        ready = self._ready
        if not ready:
            return []
        total = self.tally.total
        remaining: int | None = None
        if total is not None:
            remaining = len(ready) + total - self._lines_read
        elif self._input_done:
            remaining = len(ready)
        n = min(len(ready), self._chunker.size(remaining))
        return [ready.popleft() for _ in range(n)]

    def _send(self, pool: Pool, items: list[Item]) -> None:
        post = self._inbox.post
        pool.apply_async(
            run_chunk,
            (self.spec, [item.call for item in items], self.opts.json),
            callback=lambda value: post(Outcome(items, True, value)),
            error_callback=lambda exc: post(Outcome(items, False, exc)),
            task_timeout=self._chunker.timeout(len(items), self.opts.task_timeout),
        )
        self._inflight += 1

    def _on_outcome(self, event: Outcome) -> None:
        exc = event.value
        if event.ok:
            self._chunker.observe(exc)
            self._record(event.items, exc)
        elif isinstance(exc, CancelledError):
            pass
        elif isinstance(exc, PoolBrokenError):
            raise exc  # not the inputs' fault: stop, and leave them to the next run
        elif isinstance(exc, (WorkerLostError, TaskTimeoutError)):
            self._on_lost(event.items, exc)
        else:
            cause = exc.__cause__
            tb = cause.tb if isinstance(cause, RemoteTraceback) else ""
            error = CallError(type_name(exc), str(exc), tb)
            for item in event.items:
                item.attempts += 1
                self._store_failure(item, error, None)

    def _on_lost(self, items: list[Item], exc: WorkerLostError | TaskTimeoutError) -> None:
        """A worker died or was stopped: isolate the culprit, retry it, or fail it."""
        if len(items) > 1:
            self._retry.extendleft([item] for item in reversed(items))
            return
        item = items[0]
        item.attempts += 1
        if item.attempts <= self.opts.retries:
            self._retry.appendleft(items)
            return
        label = f"line {item.line}"
        if isinstance(exc, TaskTimeoutError):
            limit = self.opts.task_timeout or exc.timeout
            error: Exception = TaskTimeoutError(limit, exc.pid, label)
        else:
            error = WorkerLostError(exc.pid, exc.exitcode, label)
        self._store_failure(item, CallError(type_name(error), str(error), ""), exc.pid)

    # -- rows

    def _record(self, items: list[Item], outcome: ChunkOutcome) -> None:
        """A chunk came back: one row per input (done, or failed with its exception)."""
        pid, run_id, tally = outcome.pid, self.db.run_id, self.tally
        rows: list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            item.attempts += 1
            start, took, fmt = outcome.started[i], outcome.durations[i], outcome.formats[i]
            attempts = item.prior_attempts + item.attempts
            if fmt == ERROR:
                e = outcome.errors[i]
                rows.append((item.line, item.sha, item.text, "failed", None, None, e.type_name,
                             e.message, e.traceback, attempts, pid, start, start + took, took,
                             run_id))  # fmt: skip
                tally.error_types[e.type_name] += 1
            else:
                rows.append((item.line, item.sha, item.text, "done", outcome.values[i], fmt,
                             None, None, None, attempts, pid, start, start + took, took,
                             run_id))  # fmt: skip
            if took > tally.slow_floor:
                tally.note_duration(took, item.line, item.text)
        tally.failed += len(outcome.errors)
        tally.done += len(items) - len(outcome.errors)
        self.db.add_many(rows)

    def _store_failure(self, item: Item, error: CallError, pid: int | None) -> None:
        now = time.time()
        self.db.add((
            item.line, item.sha, item.text, "failed", None, None, error.type_name,
            error.message, error.traceback, item.prior_attempts + item.attempts, pid,
            None, now, None, self.db.run_id,
        ))  # fmt: skip
        self.tally.failed += 1
        self.tally.error_types[error.type_name] += 1

    # -- the end

    def finish(self, how: str) -> list[str]:
        """Commit the last rows and the run's state; the summary lines to print.

        ``how`` is the state: ``finished``, ``interrupted`` or ``stopped``.
        """
        self.progress.clear()
        self.db.commit(self.counts(), how, self.stop_reason)
        wall = time.monotonic() - self.started
        db_option = "" if self.db.path == DEFAULT_DB else f" --db {shlex.quote(self.db.path)}"
        lines = summary(self.tally, wall, self.opts.jobs, db_option, how)
        if how == "finished":
            stale = self.db.rows_after(self._lines_read)
            if stale:
                lines.append(
                    f"  note: {stale:,} stored rows are for lines past the end of this input "
                    f"(kept; --fresh discards them)"
                )
        return lines


def make_pool(opts: RunOptions) -> Pool:
    """The run's pool: local worker processes, or ``procpool.dask`` (imported only
    then: the dask extra)."""
    if opts.backend != "dask":
        return Pool(opts.jobs, context=opts.start_method)
    try:
        import procpool.dask
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    return procpool.dask.Pool(opts.jobs, address=opts.address)


def progress_mode(option: str, err: TextIO) -> str:
    """``--progress auto|always|never`` -> the Progress mode for this stderr."""
    try:
        tty = err.isatty()
    except (AttributeError, ValueError):
        tty = False
    if option == "never":
        return "off"
    if option == "always":
        return "tty" if tty else "lines"
    return "tty" if tty else "off"
