"""Worker functions that fail on purpose, for in-process ``procpool copy`` runs.

They stand in for ``tasks.copy_chunk`` through ``runner.Workers``; each takes a marker
path bound with ``functools.partial`` and acts once, when it creates the marker
(``O_EXCL``: exactly one worker wins), so a retried task succeeds.
"""

from __future__ import annotations

import errno
import os
import signal

from procpool._cli.copy.tasks import ChunkJob, Outcome, Settings, copy_chunk


def _first(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def killed_once(marker: str, job: ChunkJob, settings: Settings) -> Outcome:
    """Write half the chunk, then die by SIGKILL (the first call of a chunk > 0 only)."""
    if job.index > 0 and _first(marker):
        fd = os.open(job.part, os.O_WRONLY)
        os.pwrite(fd, b"\0" * (job.length // 2), job.offset)  # half-written garbage
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return copy_chunk(job, settings)


def disk_full(marker: str, job: ChunkJob, settings: Settings) -> Outcome:
    """The real chunk copy, except that one chunk beyond the first fails with ENOSPC."""
    if job.index > 0 and _first(marker):
        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return Outcome(job.part, index=job.index, error=f"{error.strerror} (ENOSPC)")
    return copy_chunk(job, settings)
