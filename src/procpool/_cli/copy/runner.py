"""``procpool copy``'s main loop: plan in the parent, move bytes in a procpool Pool.

::

    parent (main thread)                                         workers (procpool.Pool)
    ────────────────────                                         ───────────────────────
    walk (scandir) ─▶ Placer: mkdir, symlinks, FIFOs, hardlink map
                  └─▶ files to copy ─▶ work list, largest first:
                        big file (>= --chunk-cutoff) ─▶ part file + journal, one task
                                                        per --chunk-size range ──▶ copy_chunk
                        small files ─▶ batches (64 files / 8 MiB)  ─────────────▶ copy_files
    outcomes ◀── callback thread ◀── results ◀──────────────────────────────────── Outcome
      chunk done ─▶ journal line; last chunk ─▶ metadata, rename part into place
    then: hardlinks, directory metadata (deepest first), summary

**Window.** At most ``3 x jobs`` tasks are in flight, so the largest work is taken first
and a Ctrl-C or --fail-fast has little to undo; ``--bwlimit`` delays submissions.

**Failures.** A task whose worker dies is retried by the pool (``retries=2``); each
task may run twice. Errors are outcomes, reported as they arrive; the exit status is 1
if any. A chunked file that fails loses its part file and journal; one interrupted
(Ctrl-C, SIGKILL, a crash) keeps both, and a rerun copies only the missing chunks.
"""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from procpool import Pool
from procpool._cli.copy.journal import Journal, header
from procpool._cli.copy.place import Placer, sync_dir
from procpool._cli.copy.plan import Entry
from procpool._cli.copy.report import Reporter, Stats
from procpool._cli.copy.tasks import (
    ChunkJob,
    FileJob,
    Outcome,
    Settings,
    apply_meta,
    copy_chunk,
    copy_files,
    describe,
    temp_name,
)

_RETRIES = 2


@dataclass(frozen=True, slots=True)
class Sizes:
    """How work is cut: chunks of large files, batches of small ones."""

    chunk_size: int
    chunk_cutoff: int
    batch_files: int = 64
    batch_bytes: int = 8 << 20


@dataclass(frozen=True, slots=True)
class Workers:
    """What runs the tasks (tests swap the functions for ones that fail on purpose)."""

    jobs: int
    copy_files: Callable[[tuple[FileJob, ...], Settings], list[Outcome]] = copy_files
    copy_chunk: Callable[[ChunkJob, Settings], Outcome] = copy_chunk
    bwlimit: float | None = None  # bytes per second over the whole run


@dataclass
class BigFile:
    """A chunked file in progress: its part file, journal and chunks."""

    entry: Entry
    sparse: bool
    part: str = ""
    journal: Journal | None = None
    pending: deque[int] = field(default_factory=deque)
    count: int = 0
    outstanding: int = 0
    error: str | None = None


Batch = tuple[FileJob, ...]
Work = BigFile | Batch


def is_sparse(st: os.stat_result) -> bool:
    return st.st_blocks * 512 < st.st_size


def work_list(files: list[Entry], sizes: Sizes) -> deque[Work]:
    """Big files (chunked), largest first, then batches of the others by directory.

    A batch holds files of one directory in inode order: two workers then write into
    different directories (creating and renaming in the same one contend for its
    lock), and a cold read goes through each directory's inodes in disk order."""
    big = sorted((e for e in files if e.st.st_size >= sizes.chunk_cutoff),
                 key=lambda e: e.st.st_size, reverse=True)  # fmt: skip
    work: deque[Work] = deque(BigFile(entry, is_sparse(entry.st)) for entry in big)
    small = sorted((e for e in files if e.st.st_size < sizes.chunk_cutoff),
                   key=lambda e: (os.path.dirname(e.dst), e.st.st_ino))  # fmt: skip
    batch: list[FileJob] = []
    batch_bytes = 0
    for entry in small:
        batch.append(FileJob(entry.src, entry.dst, entry.st.st_size, is_sparse(entry.st)))
        batch_bytes += entry.st.st_size
        if len(batch) >= sizes.batch_files or batch_bytes >= sizes.batch_bytes:
            work.append(tuple(batch))
            batch, batch_bytes = [], 0
    if batch:
        work.append(tuple(batch))
    return work


class Copier:
    """Runs the tasks of one ``procpool copy`` and finishes the chunked files."""

    def __init__(self, placer: Placer, sizes: Sizes, workers: Workers, fail_fast: bool) -> None:
        self._placer = placer
        self._settings = placer.settings
        self._stats: Stats = placer.stats
        self._report: Reporter = placer.report
        self._sizes = sizes
        self._workers = workers
        self._fail_fast = fail_fast
        self._results: queue.SimpleQueue[tuple[Any, Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._in_flight: dict[int, Work] = {}
        self._submitted_bytes = 0
        self._tags = 0
        self._stop = False

    def run(self, files: list[Entry]) -> None:
        """Copy ``files``; on Ctrl-C, stop the workers, clean up and re-raise."""
        work = work_list(files, self._sizes)
        if not work:
            return
        started = time.monotonic()
        with Pool(min(self._workers.jobs, _task_count(work, self._sizes)),
                  retries=_RETRIES) as pool:  # fmt: skip
            try:
                self._loop(pool, work, started)
            except BaseException:
                pool.terminate()
                self._abandon()
                raise
            if self._stop:
                pool.terminate()
                self._abandon()
            else:
                pool.close()
            pool.join()

    def _loop(self, pool: Pool, work: deque[Work], started: float) -> None:
        window = 3 * self._workers.jobs
        while (work and not self._stop) or self._in_flight:
            delay = 0.0
            while work and not self._stop and len(self._in_flight) < window:
                delay = self._pace(started)
                if delay > 0:
                    break
                self._submit(pool, work)
            if not self._in_flight and delay <= 0:
                continue
            try:
                tag, value, exc = self._results.get(timeout=delay if delay > 0 else 1.0)
            except queue.Empty:
                self._report.tick()
                continue
            self._arrived(tag, value, exc)
            self._report.tick()

    def _pace(self, started: float) -> float:
        """Seconds to wait before the next submission under --bwlimit."""
        if not self._workers.bwlimit:
            return 0.0
        return started + self._submitted_bytes / self._workers.bwlimit - time.monotonic()

    def _submit(self, pool: Pool, work: deque[Work]) -> None:
        item = work[0]
        if isinstance(item, tuple):
            work.popleft()
            self._submitted_bytes += sum(job.size for job in item)
            self._apply(pool, self._workers.copy_files, item, item)
            return
        if item.count == 0 and not self._start_big(item):
            work.popleft()
            return
        if not item.pending or item.error is not None:
            work.popleft()
            return
        index = item.pending.popleft()
        offset = index * self._sizes.chunk_size
        length = min(self._sizes.chunk_size, item.entry.st.st_size - offset)
        self._submitted_bytes += length
        item.outstanding += 1
        job = ChunkJob(item.entry.src, item.part, offset, length, index, item.sparse)
        self._apply(pool, self._workers.copy_chunk, job, item)
        if not item.pending:
            work.popleft()

    def _apply(self, pool: Pool, func: Callable[..., Any], job: Any, item: Work) -> None:
        self._tags += 1
        tag = self._tags
        self._in_flight[tag] = item
        results = self._results

        def done(value: Any) -> None:
            results.put((tag, value, None))

        def failed(exc: BaseException) -> None:
            results.put((tag, None, exc))

        pool.apply_async(func, (job, self._settings), callback=done, error_callback=failed)

    def _start_big(self, big: BigFile) -> bool:
        """Open the part file and journal; queue the chunks it does not list."""
        entry = big.entry
        big.part = temp_name(entry.dst, "part")
        head = header(entry.st, self._sizes.chunk_size)
        big.count = max(1, -(-entry.st.st_size // self._sizes.chunk_size))
        try:
            big.journal, done = Journal.open(big.part, temp_name(entry.dst, "journal"), head,
                                             self._settings.fsync)  # fmt: skip
        except OSError as exc:
            self._fail(entry.dst, f"cannot create the part file: {describe(exc)}")
            return False
        big.pending.extend(i for i in range(big.count) if i not in done)
        for index in done:
            self._stats.bytes_resumed += min(
                self._sizes.chunk_size, entry.st.st_size - index * self._sizes.chunk_size
            )
        if not big.pending:  # every chunk was written before: only the rename is left
            self._finish_big(big)
            return False
        return True

    def _arrived(self, tag: int, value: Any, exc: BaseException | None) -> None:
        item = self._in_flight.pop(tag)
        if isinstance(item, tuple):
            outcomes = value if exc is None else [
                Outcome(job.dst, error=f"task failed: {type(exc).__name__}: {exc}") for job in item
            ]  # fmt: skip
            for outcome in outcomes:
                self._file_done(outcome)
            return
        item.outstanding -= 1
        if exc is not None:
            value = Outcome(item.part, error=f"task failed: {type(exc).__name__}: {exc}")
        self._chunk_done(item, value)

    def _file_done(self, outcome: Outcome) -> None:
        self._count(outcome)
        if outcome.error is not None:
            self._fail(outcome.dst, outcome.error)
        elif outcome.skipped:
            self._stats.files_unchanged += 1
        else:
            self._stats.files_copied += 1
            self._placer.say(f"copied {outcome.dst}")

    def _chunk_done(self, big: BigFile, outcome: Outcome) -> None:
        self._count(outcome)
        if outcome.error is not None and big.error is None:
            big.error = outcome.error
            big.pending.clear()
        elif outcome.error is None and big.journal is not None:
            big.journal.record(outcome.index)
            self._stats.chunks += 1
            self._placer.say(f"chunk {outcome.index + 1}/{big.count} {big.entry.dst}")
        if big.outstanding or big.pending:
            return
        if big.error is not None:
            self._drop_big(big)
            self._fail(big.entry.dst, big.error)
        else:
            self._finish_big(big)

    def _count(self, outcome: Outcome) -> None:
        self._stats.bytes_copied += outcome.copied
        if outcome.method:
            self._stats.methods[outcome.method] += 1
        if self._settings.verify and outcome.error is None and not outcome.skipped:
            self._stats.verified += 1
        if outcome.mismatch:
            self._stats.mismatches += 1

    def _finish_big(self, big: BigFile) -> None:
        """All chunks written: check the source, set metadata, rename into place."""
        entry = big.entry
        try:
            now = os.stat(entry.src)
            if (now.st_size, now.st_mtime_ns) != (entry.st.st_size, entry.st.st_mtime_ns):
                raise OSError(0, "the source changed while it was copied; run again")
            apply_meta(big.part, now, entry.src, self._settings)
            if self._settings.fsync:
                _sync_file(big.part)
            os.rename(big.part, entry.dst)
        except OSError as exc:
            self._drop_big(big)
            self._fail(entry.dst, describe(exc) if exc.errno else str(exc.strerror))
            return
        assert big.journal is not None
        big.journal.remove()
        self._stats.files_copied += 1
        self._placer.say(f"copied {entry.dst}")

    def _drop_big(self, big: BigFile) -> None:
        """A failed chunked file: nothing half-written is left (part, journal)."""
        if big.journal is not None:
            big.journal.remove()
        _unlink(big.part)

    def _fail(self, dst: str, message: str) -> None:
        self._placer.failed.add(dst)
        self._report.error(dst, message)
        if self._fail_fast:
            self._stop = True

    def _abandon(self) -> None:
        """After terminate: remove the temporaries of unfinished whole files; chunked
        files keep their part and journal, so a rerun resumes them."""
        for item in self._in_flight.values():
            if isinstance(item, tuple):
                for job in item:
                    _unlink(temp_name(job.dst, "tmp"))
            elif item.journal is not None:
                item.journal.close()
        self._in_flight.clear()


def _task_count(work: deque[Work], sizes: Sizes) -> int:
    return sum(1 if isinstance(w, tuple) else
               max(1, -(-w.entry.st.st_size // sizes.chunk_size)) for w in work)  # fmt: skip


def _sync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["BigFile", "Copier", "Sizes", "Workers", "sync_dir", "work_list"]
