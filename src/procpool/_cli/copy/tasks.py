"""What a worker does: copy whole files (in batches) or one chunk of a large file.

Every function here runs in a worker process, takes small frozen dataclasses and
returns ``Outcome`` records; an ``OSError`` becomes an outcome, never an exception, so
one bad file does not fail its batch. A worker that dies in the middle leaves only a
temporary name behind (``.NAME.procpool.tmp``, or the ``.part`` of a chunked file):
the pool retries the task, and every task may run twice (temporaries are truncated,
chunks are written at fixed offsets).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from procpool._cli.copy.kernel import copy_range, digest_range

_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_O_TEMP = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_LONG_NAME = 200  # bytes: longer names get a hashed temporary name (NAME_MAX is 255)


@dataclass(frozen=True, slots=True)
class Settings:
    """How files are written: the same for every task of a run."""

    archive: bool  # -a: mode, ownership, timestamps (ns), xattrs
    fsync: bool
    verify: bool
    checksum: bool
    umask: int


@dataclass(frozen=True, slots=True)
class FileJob:
    """Copy ``src`` to ``dst`` whole (through a temporary name beside ``dst``)."""

    src: str
    dst: str
    size: int
    sparse: bool


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """Copy bytes ``[offset, offset + length)`` of ``src`` into the part file ``part``."""

    src: str
    part: str
    offset: int
    length: int
    index: int
    sparse: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one file or chunk."""

    dst: str
    copied: int = 0  # bytes of data written (holes not counted)
    method: str = ""  # the kernel path that wrote the last segment
    error: str | None = None
    skipped: bool = False  # --checksum found the same content
    index: int = -1  # the chunk's index, -1 for a whole file
    mismatch: bool = False  # --verify found a difference


def temp_name(dst: str, suffix: str) -> str:
    """``dir/.NAME.procpool.SUFFIX`` beside ``dst`` (hashed when NAME is long)."""
    head, name = os.path.split(dst)
    if len(os.fsencode(name)) > _LONG_NAME:
        name = hashlib.blake2b(os.fsencode(name), digest_size=16).hexdigest()
    return os.path.join(head, f".{name}.procpool.{suffix}")


def describe(exc: BaseException) -> str:
    """``Permission denied (EACCES)``: an OSError's message with its errno's name."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return str(exc)


def copy_xattrs(src: int | str, dst: int | str, follow: bool = True) -> None:
    """Copy extended attributes; those this process may not set are left out."""
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=follow),
                        follow_symlinks=follow)  # fmt: skip
        except OSError as exc:  # trusted.* / security.* need privileges; a fs may refuse
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise


def apply_meta(dst: int | str, st: os.stat_result, src: int | str, settings: Settings) -> None:
    """Give ``dst`` (a descriptor or a path, not a symlink) ``src``'s metadata.

    Ownership goes before the mode (a chown clears set-user-ID bits), times last."""
    if not settings.archive:
        os.chmod(dst, stat.S_IMODE(st.st_mode) & ~settings.umask)
        return
    copy_xattrs(src, dst)
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except PermissionError:  # not permitted for another user's files: as cp -a
        pass
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def link_meta(dst: str, st: os.stat_result, settings: Settings) -> None:
    """A symlink's ownership and timestamps (its mode means nothing on Linux)."""
    if not settings.archive:
        return
    try:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        pass
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_files(jobs: tuple[FileJob, ...], settings: Settings) -> list[Outcome]:
    """Copy a batch of whole files, each through its temporary name.

    Every source is opened first and its reading started (``POSIX_FADV_WILLNEED``),
    so on a cold cache the disk reads the whole batch at once, not one file after
    another while each copy waits for its own."""
    opened: list[int | OSError] = []
    try:
        for job in jobs:
            opened.append(_open_ahead(job))
        return [copy_file(job, settings, src) for job, src in zip(jobs, opened, strict=True)]
    finally:
        for src in opened:
            if isinstance(src, int):
                os.close(src)


def _open_ahead(job: FileJob) -> int | OSError:
    try:
        src = os.open(job.src, _O_READ)
    except OSError as exc:
        return exc
    try:
        os.posix_fadvise(src, 0, job.size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # a hint only
    return src


def copy_file(job: FileJob, settings: Settings, src: int | OSError) -> Outcome:
    """Copy one file from ``src``, its source opened by the caller (who closes it), or
    why it could not be: write the temporary, verify, set metadata, rename into place."""
    if isinstance(src, OSError):
        return Outcome(job.dst, error=f"cannot open: {describe(src)}")
    tmp = temp_name(job.dst, "tmp")
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return Outcome(job.dst, error="no longer a regular file; not copied")
        if settings.checksum and _same_content(src, job.dst, st.st_size):
            return Outcome(job.dst, skipped=True)
        return _write_whole(src, st, job, tmp, settings)
    except (OSError, EOFError) as exc:
        _unlink(tmp)
        return Outcome(job.dst, error=describe(exc))


def _write_whole(src: int, st: os.stat_result, job: FileJob, tmp: str,
                 settings: Settings) -> Outcome:  # fmt: skip
    dst = os.open(tmp, _O_TEMP, 0o600)
    try:
        os.ftruncate(dst, st.st_size)
        copied, method = copy_range(src, dst, 0, st.st_size, job.sparse)
        if settings.verify and digest_range(src, 0, st.st_size) != digest_range(dst, 0, st.st_size):
            _unlink(tmp)
            return Outcome(job.dst, copied, method, "verify: the copy differs from the "
                           "source (left as it was)", mismatch=True)  # fmt: skip
        apply_meta(dst, st, src, settings)
        if settings.fsync:
            os.fsync(dst)
    finally:
        os.close(dst)
    os.rename(tmp, job.dst)
    return Outcome(job.dst, copied, method)


def _same_content(src: int, dst_path: str, size: int) -> bool:
    try:
        dst = os.open(dst_path, _O_READ)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(dst).st_mode) or os.fstat(dst).st_size != size:
            return False
        return digest_range(src, 0, size) == digest_range(dst, 0, size)
    finally:
        os.close(dst)


def copy_chunk(job: ChunkJob, settings: Settings) -> Outcome:
    """Copy one chunk into the part file at its own offsets (and verify it)."""
    try:
        src = os.open(job.src, _O_READ)
    except OSError as exc:
        return Outcome(job.part, index=job.index, error=f"cannot open: {describe(exc)}")
    try:
        dst = os.open(job.part, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return _write_chunk(src, dst, job, settings)
        finally:
            os.close(dst)
    except (OSError, EOFError) as exc:
        return Outcome(job.part, index=job.index, error=describe(exc))
    finally:
        os.close(src)


def _write_chunk(src: int, dst: int, job: ChunkJob, settings: Settings) -> Outcome:
    copied, method = copy_range(src, dst, job.offset, job.length, job.sparse)
    if settings.verify and digest_range(src, job.offset, job.length) != digest_range(
        dst, job.offset, job.length
    ):
        return Outcome(job.part, copied, method, f"verify: chunk {job.index} differs from "
                       "the source", index=job.index, mismatch=True)  # fmt: skip
    if settings.fsync:
        os.fdatasync(dst)
    return Outcome(job.part, copied, method, index=job.index)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
