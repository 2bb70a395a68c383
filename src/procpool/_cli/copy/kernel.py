"""Moving and hashing byte ranges between open files, in a worker.

``copy_range`` copies ``[offset, offset + length)`` of one file to the same offsets of
another, with the fastest path the kernel offers: ``copy_file_range`` with explicit
offsets (in-kernel, a reflink on filesystems that share extents), else ``sendfile``,
else ``pread``/``pwrite``. A path that fails with EXDEV, EINVAL, ENOSYS or EOPNOTSUPP
(another filesystem, an old kernel, a filesystem that does not implement it), or that
copies nothing before the end, hands the rest of the range to the next path.

Holes: the destination is made its full size first (``ftruncate``), so only the data
segments of a sparse source (``SEEK_DATA``/``SEEK_HOLE``) are copied and the holes stay
holes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

_FALLBACK = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_STEP = 1 << 30  # bytes per copy_file_range / sendfile call (the kernel caps it anyway)
_BUFFER = 1 << 20

try:  # BLAKE3 when installed (faster); BLAKE2b otherwise (in the stdlib).
    from blake3 import blake3 as _blake3  # type: ignore[import-not-found, unused-ignore]

    DIGEST_NAME = "blake3"
except ImportError:
    _blake3 = None
    DIGEST_NAME = "blake2b-256"


class _Stuck(Exception):
    """A path could not go on; ``copied`` bytes were done before it stopped."""

    def __init__(self, copied: int) -> None:
        super().__init__(copied)
        self.copied = copied


def _by_copy_file_range(src: int, dst: int, offset: int, length: int) -> int:
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, min(length - done, _STEP), offset + done,
                                   offset + done)  # fmt: skip
        except OSError as exc:
            if exc.errno in _FALLBACK:
                raise _Stuck(done) from None
            raise
        if n == 0:  # EOF, or a filesystem that answers 0 instead of an error
            raise _Stuck(done)
        done += n
    return done


def _by_sendfile(src: int, dst: int, offset: int, length: int) -> int:
    done = 0
    os.lseek(dst, offset, os.SEEK_SET)  # sendfile writes at the destination's position
    while done < length:
        try:
            n = os.sendfile(dst, src, offset + done, min(length - done, _STEP))
        except OSError as exc:
            if exc.errno in _FALLBACK:
                raise _Stuck(done) from None
            raise
        if n == 0:
            raise _Stuck(done)
        done += n
    return done


def _by_pread(src: int, dst: int, offset: int, length: int) -> int:
    done = 0
    while done < length:
        data = os.pread(src, min(length - done, _BUFFER), offset + done)
        if not data:
            return done  # the source is shorter than it was: the caller reports it
        view = memoryview(data)
        while view:
            written = os.pwrite(dst, view, offset + done)
            view = view[written:]
            done += written
    return done


_PATHS: tuple[tuple[str, Callable[[int, int, int, int], int]], ...] = (
    ("copy_file_range", _by_copy_file_range),
    ("sendfile", _by_sendfile),
    ("pread", _by_pread),
)


def _copy_segment(src: int, dst: int, offset: int, length: int, start_at: int) -> tuple[int, int]:
    """Copy one segment; returns (bytes copied, index of the path that finished it)."""
    done = 0
    for index in range(start_at, len(_PATHS)):
        try:
            done += _PATHS[index][1](src, dst, offset + done, length - done)
            return done, index
        except _Stuck as stuck:
            done += stuck.copied
    return done, len(_PATHS) - 1


def data_segments(fd: int, offset: int, end: int, sparse: bool) -> Iterator[tuple[int, int]]:
    """The (start, stop) data segments of ``fd`` in ``[offset, end)``: all of it unless
    ``sparse`` and the filesystem answers SEEK_DATA/SEEK_HOLE."""
    if not sparse:
        yield offset, end
        return
    position = offset
    while position < end:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end of the file
                return
            yield position, end  # SEEK_DATA not supported: copy it all
            return
        if start >= end:
            return
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        yield start, stop
        position = stop


def copy_range(src: int, dst: int, offset: int, length: int, sparse: bool) -> tuple[int, str]:
    """Copy ``[offset, offset + length)`` of ``src`` into ``dst`` at the same offsets.

    Returns (bytes of data copied, the path that copied the last segment). Raises
    ``OSError`` on an error no fallback covers (EIO, ENOSPC, ...), and ``EOFError`` if
    the source ended early (it shrank while being copied)."""
    path_index = 0
    copied = 0
    for start, stop in data_segments(src, offset, offset + length, sparse):
        done, path_index = _copy_segment(src, dst, start, stop - start, path_index)
        copied += done
        if done < stop - start:
            raise EOFError(f"the source ended at byte {start + done}, before {stop}")
    return copied, _PATHS[path_index][0]


def new_digest() -> Any:
    """A fresh BLAKE3 (when installed) or BLAKE2b-256 hash object."""
    return _blake3() if _blake3 is not None else hashlib.blake2b(digest_size=32)


def digest_range(fd: int, offset: int, length: int) -> str:
    """The hex digest of ``[offset, offset + length)`` of ``fd`` (holes read as zeros)."""
    digest = new_digest()
    buffer = bytearray(min(_BUFFER, max(length, 1)))
    view = memoryview(buffer)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[: min(len(buffer), length - done)]], offset + done)
        if n == 0:
            break
        digest.update(view[:n])
        done += n
    return str(digest.hexdigest())
