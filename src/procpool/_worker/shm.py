"""Large buffers out of band, through anonymous shared memory.

Pickle protocol 5 hands us every buffer of a numpy array, bytes, bytearray or
memoryview. Those of at least :data:`THRESHOLD` bytes are copied once into a
``memfd`` (anonymous memory with no name anywhere) whose descriptor travels beside
the pipe, over a Unix socket (SCM_RIGHTS). The receiver maps it copy-on-write and
unpickles straight from the mapping: no copy through the pipe, no copy on the way out.

Nothing can leak: a memfd has no name in ``/dev/shm`` to forget, and the kernel frees
its memory when the last descriptor and mapping are gone, whoever crashed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import socket
import struct
from typing import Any

#: Buffers at least this large go out of band.
THRESHOLD = 1 << 20
# SCM_RIGHTS carries at most 253 descriptors a message; stay well below.
MAX_BUFFERS = 64
_COUNT = struct.Struct("<I")
AVAILABLE = hasattr(os, "memfd_create") and hasattr(socket, "send_fds")


class OOBPayload(bytes):
    """Pickled bytes whose large buffers are in the memfds ``fds``.

    The memfds are closed by ``release()`` (once the call is answered) or when the
    payload is collected, and only in the process that made them: a forked worker
    collecting its copy must not close whatever file now has those numbers.
    """

    fds: tuple[int, ...]
    owner_pid: int

    @classmethod
    def holding(cls, data: bytes, fds: list[int]) -> OOBPayload:
        payload = cls(data)
        payload.fds = tuple(fds)
        payload.owner_pid = os.getpid()
        return payload

    def release(self) -> None:
        fds, self.fds = self.fds, ()
        if fds and self.owner_pid == os.getpid():
            close_all(fds)

    def __del__(self) -> None:
        self.release()


def collector(fds: list[int], sealed: bool = False) -> Any:
    """A pickle ``buffer_callback`` that moves large buffers into memfds (into ``fds``);
    ``sealed`` ones can never be written again, by anyone (see pool.share)."""

    def take(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if not AVAILABLE or view.nbytes < THRESHOLD or len(fds) >= MAX_BUFFERS:
            return True  # in band
        fds.append(_to_memfd(view, sealed))
        return False

    return take


class _BigBytes:
    """Stands in for a large ``bytes`` so that it pickles out of band.

    Protocol 5 moves bytearrays, memoryviews and numpy arrays out of band but not
    ``bytes`` (and the C pickler never asks a hook about exact bytes), so a large
    one is wrapped: it unpickles as plain ``bytes``, copied once from the mapping.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        return bytes, (pickle.PickleBuffer(self.data),)


# wrap_large_bytes does not walk a container longer than this: its pickle is large
# because it is long, and a walk of every item would cost more than the copy it saves.
_WRAP_MAX_ITEMS = 64


def wrap_large_bytes(obj: Any, depth: int = 3) -> Any:
    """``obj`` with its large ``bytes`` wrapped, looking into tuples, lists and dict
    values (of at most _WRAP_MAX_ITEMS items) down to ``depth`` levels (a call is
    ``(mode, args, kwargs)``). ``obj`` itself when there is nothing to wrap."""
    kind = type(obj)
    if kind is bytes:
        return _BigBytes(obj) if len(obj) >= THRESHOLD else obj
    if depth == 0 or not (kind is tuple or kind is list or kind is dict):
        return obj
    if len(obj) > _WRAP_MAX_ITEMS:
        return obj
    if kind is dict:
        values = {key: wrap_large_bytes(value, depth - 1) for key, value in obj.items()}
        same = all(values[key] is value for key, value in obj.items())
        return obj if same else values
    items = [wrap_large_bytes(item, depth - 1) for item in obj]
    if all(new is old for new, old in zip(items, obj, strict=True)):
        return obj
    return kind(items)


def _to_memfd(view: memoryview | bytes, sealed: bool = False) -> int:
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealed else 0)
    fd = os.memfd_create("procpool", flags)
    try:
        # write() fills the memfd in bulk; a mapping would take a page fault per page.
        done = 0
        size = len(view) if isinstance(view, bytes) else view.nbytes
        while done < size:
            done += os.pwrite(fd, view[done:], done)
        if sealed:
            import fcntl

            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def loads(data: bytes | memoryview, fds: list[int], read_only: bool = False) -> Any:
    """Unpickle with buffers mapped from ``fds`` (which this closes): copy-on-write, or
    ``read_only`` (shared pages; numpy arrays come back not writeable)."""
    try:
        buffers = [_map_read_only(fd) if read_only else _map(fd) for fd in fds]
    finally:
        close_all(fds)
    return pickle.loads(data, buffers=buffers)


def memfd_of(data: bytes) -> int:
    """A sealed memfd holding ``data``."""
    return _to_memfd(data, sealed=True)


def read_all(fd: int) -> memoryview:
    """The whole of a (sealed) memfd, mapped read-only."""
    return memoryview(_map_read_only(fd))


def _raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard one (once).

    Each mapping that backs a received array keeps a descriptor open (CPython's mmap
    holds a duplicate) for as long as the array lives; the common soft limit of 1024
    would cap how many large results a program can hold.
    """
    global _fd_limit_raised
    if _fd_limit_raised:
        return
    _fd_limit_raised = True
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


_fd_limit_raised = False


def _map(fd: int) -> mmap.mmap:
    _raise_fd_limit()
    size = os.fstat(fd).st_size
    # Copy-on-write: a task that changes its argument in place must not change what
    # a retry of the same call would receive.
    # No MAP_POPULATE: on a private mapping it copies every page up front (measured
    # ~50 ms per 100 MB), where faulting pages in as they are read costs ~10 ms.
    return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)


def _map_read_only(fd: int) -> mmap.mmap:
    _raise_fd_limit()
    return mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)


def close_all(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def send(sock_fd: int, fds: list[int] | tuple[int, ...]) -> None:
    """Send descriptors (one message) on the Unix socket ``sock_fd``."""
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [b"\0"], list(fds))
    finally:
        sock.detach()  # the descriptor belongs to the caller


def receive(sock_fd: int, count: int, block: bool = True) -> list[int]:
    """Receive the next message's descriptors (``count`` of them)."""
    sock = socket.socket(fileno=sock_fd)
    try:
        flags = 0 if block else socket.MSG_DONTWAIT
        _, fds, _, _ = socket.recv_fds(sock, 1, count, flags)
    finally:
        sock.detach()
    if len(fds) != count:
        close_all(fds)
        raise OSError(f"expected {count} shared-memory descriptors, got {len(fds)}")
    return list(fds)


def pack_count(count: int, payload: bytes) -> bytes:
    return _COUNT.pack(count) + payload


def unpack_count(payload: bytes | bytearray) -> tuple[int, memoryview]:
    (count,) = _COUNT.unpack_from(payload)
    return count, memoryview(payload)[_COUNT.size :]
