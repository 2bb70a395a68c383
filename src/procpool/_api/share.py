"""``pool.share(obj)``: a big read-only object, sent to each worker at most once.

The object is pickled once, in the parent: its large buffers (numpy arrays, bytes,
bytearrays of 1 MiB or more) go into sealed memfds (anonymous shared memory that
nobody can write again), and so does the rest of its pickle when it is large. The
:class:`Shared` handle pickles to a few numbers: the owner's pid, the handle's id, and
those descriptors' numbers and inodes. A worker that unpickles a handle for the first
time opens the descriptors through ``/proc/<owner>/fd/<n>``, maps them read-only
(shared pages: no copy) and unpickles the object; it keeps the object for the next
tasks, so a handle costs a task a few dozen bytes, wherever it sits in its arguments.

The memory goes when the handle is released (``release()``, the pool's ``join()`` or
``terminate()``, or the handle's collection) and the workers have let go of it: a
worker drops the released objects it holds as soon as it attaches another one, and
all of them when it exits. Nothing can leak: a memfd has no name, and the kernel frees
it once the last descriptor and mapping are gone, whoever crashed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import threading
import weakref
from typing import Any, Generic, TypeVar

from procpool._engine.pipes import _parent_fds, close_parent_fd
from procpool._worker import serialize, shm

T = TypeVar("T")

_ids = itertools.count(1)
# The handles of this process, by id (a handle unpickled where it was made is itself).
_owned: weakref.WeakValueDictionary[int, Shared[Any]] = weakref.WeakValueDictionary()
# What this process (a worker) attached: (owner pid, id) -> (the descriptors' numbers
# and inodes in the owner, the object).
_attached: dict[tuple[int, int], tuple[tuple[tuple[int, int], ...], Any]] = {}
_attach_lock = threading.Lock()


class Shared(Generic[T]):
    """A handle of an object shared with a pool's tasks by ``pool.share(obj)``.

    Pass the handle in a task's arguments, at any depth (``pool.map(f, items)`` with
    ``f`` reading ``handle`` from a closure or ``functools.partial`` works too): the
    task receives the object itself. Each worker gets the object once; large buffers
    are mapped read-only from shared memory (numpy arrays arrive not writeable).
    ``release()`` frees the shared copy (the pool does it at ``join()``/``terminate()``);
    ``value`` is the object in this process.
    """

    def __init__(self, obj: T) -> None:
        self.value = obj
        self._id = next(_ids)
        self._pid = os.getpid()
        fds: list[int] = []
        try:
            data = _dumps(obj, fds)
            data_fd = None
            if len(data) >= shm.THRESHOLD:  # a big pickle with nothing out of band
                data_fd = shm.memfd_of(data)
                data = b""
        except BaseException:
            shm.close_all(fds)
            raise
        if data_fd is not None:
            fds.insert(0, data_fd)
        self._inline = data  # b"": the pickle is the first memfd
        self._fds = tuple((fd, os.fstat(fd).st_ino) for fd in fds)
        self.nbytes = len(data) + sum(os.fstat(fd).st_size for fd in fds)
        _parent_fds.update(fds)  # a worker forked later must not hold them
        self._finalizer = weakref.finalize(self, _close_in, self._pid, fds)
        _owned[self._id] = self

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def release(self) -> None:
        """Free the shared copy; a task given this handle afterwards fails."""
        self._finalizer()

    def __reduce__(self) -> tuple[Any, ...]:
        if self.released:
            raise ValueError(
                f"{self!r} was released (pool.join(), pool.terminate() or release()): "
                f"share the object again to use it in new tasks"
            )
        return (_attach, (self._pid, self._id, self._fds, self._inline))

    def __repr__(self) -> str:
        state = "released" if self.released else f"{self.nbytes:,} bytes"
        return f"<procpool.Shared {type(self.value).__name__} {state}>"


def _dumps(obj: object, fds: list[int]) -> bytes:
    """Pickle ``obj`` with its large buffers in sealed memfds (appended to ``fds``)."""
    wrapped = shm.wrap_large_bytes(obj)
    try:
        return pickle.dumps(wrapped, serialize.PROTOCOL, buffer_callback=shm.collector(fds, True))
    except Exception:
        shm.close_all(fds)
        fds.clear()
        return serialize.dumps(obj)  # (cloudpickle: a lambda inside, say; all in band)


def _close_in(pid: int, fds: list[int]) -> None:
    if os.getpid() == pid:
        for fd in fds:
            close_parent_fd(fd)


def _attach(
    owner: int, share_id: int, fds: tuple[tuple[int, int], ...], inline: bytes
) -> Any:
    """Unpickling a handle: the object it stands for (attached once per process)."""
    if owner == os.getpid():
        handle = _owned.get(share_id)
        if handle is None:
            raise ValueError("this shared object was released")
        return handle.value
    key = (owner, share_id)
    with _attach_lock:
        held = _attached.get(key)
        if held is not None and held[0] == fds:
            return held[1]
        _forget_released(owner)
        value = _load(owner, fds, inline)
        _attached[key] = (fds, value)
        return value


def _load(owner: int, fds: tuple[tuple[int, int], ...], inline: bytes) -> Any:
    opened: list[int] = []
    try:
        for number, inode in fds:
            try:
                fd = os.open(f"/proc/{owner}/fd/{number}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise ValueError(
                    f"procpool could not open the shared object of process {owner} "
                    f"(/proc/{owner}/fd/{number}: {exc.strerror}); was it released, "
                    f"or does this system forbid reading another process's descriptors?"
                ) from None
            opened.append(fd)
            if os.fstat(fd).st_ino != inode:
                raise ValueError("this shared object was released")
    except BaseException:
        shm.close_all(opened)
        raise
    if inline:
        if not opened:
            return serialize.loads(inline)
        return shm.loads(inline, opened, read_only=True)
    data, rest = opened[0], opened[1:]
    try:
        pickled = shm.read_all(data)
    finally:
        os.close(data)
    if not rest:
        return serialize.loads(pickled)
    return shm.loads(pickled, rest, read_only=True)


def _forget_released(owner: int) -> None:
    """Drop the objects of ``owner`` whose descriptors are gone (released handles)."""
    for key, (fds, _) in list(_attached.items()):
        if key[0] != owner:
            continue
        for number, inode in fds:
            try:
                alive = os.stat(f"/proc/{owner}/fd/{number}").st_ino == inode
            except OSError:
                alive = False
            if not alive:
                del _attached[key]
                break


class Shares:
    """The handles a pool made; released together when the pool is done."""

    def __init__(self) -> None:
        self._handles: weakref.WeakSet[Shared[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, obj: T) -> Shared[T]:
        handle = Shared(obj)
        with self._lock:
            self._handles.add(handle)
        return handle

    def release_all(self) -> None:
        with self._lock:
            handles = list(self._handles)
            self._handles.clear()
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.release()
