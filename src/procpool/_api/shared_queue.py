"""``procpool.Queue``: a queue that tasks can take as an argument, under every start method.

The process that makes a Queue owns its items. A broker thread of that process serves
the other processes over a Unix socket in the abstract namespace (no file to clean
up); a Queue pickles to the broker's address and the queue's id, so it can travel in a
task's arguments, which ``multiprocessing.Queue`` refuses. In the owner, ``put`` and
``get`` work on the items directly, under a lock.

Items travel pickled, each in one frame. A ``put`` to an unbounded queue is one-way: once
it returns, the item is in the socket's buffer, and it is not lost if the putter dies
the next instant (the broker reads what a dead peer sent). A ``put`` to a bounded queue
and every ``get`` wait for the broker's answer. A client acknowledges each item it got;
an item sent to a client that died before acknowledging it goes back to the front.
Waiting is done by the broker (a waiter's deadline is part of its one wait), never by
polling.
"""

from __future__ import annotations

import itertools
import os
import queue as stdlib_queue
import socket
import struct
import threading
import time
import weakref
from collections import deque
from typing import Any

from procpool._api import queue_broker as broker
from procpool._api.queue_broker import (
    ACK,
    EMPTY,
    FULL,
    GET,
    GONE,
    HEADER,
    ITEM,
    PUT,
    PUT_WAIT,
    SIZE,
    WANT,
    Items,
)
from procpool._worker import serialize

_ids = itertools.count(1)
_FAST = 1e-3
_WANT_MAX = 64


class _Client:
    """This process's connection to another process's broker (one per broker)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise OSError(
                f"procpool.Queue: it was closed, or its owner process is gone ({exc.strerror})"
            ) from None
        self.lock = threading.Lock()
        self.buffer = bytearray()
        # Items the broker sent ahead, per queue, not yet returned by get(); and how
        # many a GET may ask for (it doubles while get() is called back to back).
        self.ahead: dict[int, deque[bytes]] = {}
        self.want: dict[int, int] = {}
        self.last_get: dict[int, float] = {}

    def get(self, qid: int, wait: float) -> tuple[int, bytes]:
        """(ITEM, the item's pickle), or (EMPTY or GONE, b"").

        A consumer that asks again within _FAST of its last item asks the broker for
        up to twice as many items as the last time (at most _WANT_MAX, and never more
        than half of what is queued): a fast loop of gets then costs one round trip
        per batch; a slow consumer (a worker taking jobs) takes one at a time, so the
        others get their share. Each item is acknowledged as get() returns it: a
        consumer killed with items ahead hands them back to the queue.
        """
        with self.lock:
            ahead = self.ahead.setdefault(qid, deque())
            now = time.monotonic()
            fast = now - self.last_get.get(qid, 0.0) < _FAST
            if not ahead:
                want = min(_WANT_MAX, self.want.get(qid, 1) * 2) if fast else 1
                self.want[qid] = want
                self.send(GET, qid, wait, WANT.pack(want))
                reply, data = self._receive()
                if reply != ITEM:
                    return reply, b""
                view = memoryview(data)
                while view:
                    (size,) = WANT.unpack_from(view)
                    ahead.append(bytes(view[WANT.size:WANT.size + size]))
                    view = view[WANT.size + size:]
            item = ahead.popleft()
            self.send(ACK, qid, 0.0)
            self.last_get[qid] = time.monotonic()
            return ITEM, item

    def send(self, op: int, qid: int, timeout: float, payload: bytes = b"") -> None:
        self.sock.sendall(HEADER.pack(op, qid, timeout, len(payload)) + payload)

    def request(self, op: int, qid: int, timeout: float, payload: bytes = b"") -> tuple[int, bytes]:
        with self.lock:
            self.send(op, qid, timeout, payload)
            return self._receive()

    def _receive(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= HEADER.size:
                op, _, _, size = HEADER.unpack_from(self.buffer)
                end = HEADER.size + size
                if len(self.buffer) >= end:
                    data = bytes(self.buffer[HEADER.size:end])
                    del self.buffer[:end]
                    return op, data
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("procpool.Queue: its owner process is gone")
            self.buffer += chunk


_clients: dict[tuple[int, str], _Client] = {}
_clients_lock = threading.Lock()


def _client(address: str) -> _Client:
    key = (os.getpid(), address)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _Client(address)
        return client


_local: weakref.WeakValueDictionary[tuple[int, int], Queue] = weakref.WeakValueDictionary()


def _timeout_of(block: bool, timeout: float | None) -> float:
    if not block:
        return 0.0
    if timeout is None:
        return -1.0
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


class Queue:
    """A FIFO queue that pool tasks can take as an argument, under every start method.

    ``put``/``get`` (with ``block`` and ``timeout``, raising ``queue.Full`` and
    ``queue.Empty`` as the stdlib does), ``put_nowait``/``get_nowait``, ``qsize()``,
    ``empty()``, ``full()`` and ``close()``. ``maxsize > 0`` bounds it: a ``put`` then
    waits for room, in whichever process it is. The process that made the queue holds
    its items; it must outlive the tasks that use it. An item put by a task is safe once
    ``put`` returned, even if the task's worker is killed right after.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize if maxsize > 0 else 0
        self._qid = next(_ids)
        self._owner = os.getpid()
        self._items: Items | None = Items(self._maxsize)
        self._address = broker.register(self._qid, self._items)
        self._finalizer = weakref.finalize(self, broker.unregister, self._qid, self._owner)
        _local[(self._owner, self._qid)] = self

    @classmethod
    def _remote(cls, address: str, qid: int, maxsize: int, owner: int) -> Queue:
        found = _local.get((owner, qid)) if owner == os.getpid() else None
        if found is not None:
            return found
        self = cls.__new__(cls)
        self._maxsize, self._qid, self._owner, self._address = maxsize, qid, owner, address
        self._items = None
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Queue._remote, (self._address, self._qid, self._maxsize, self._owner))

    def __repr__(self) -> str:
        where = "here" if self._items is not None else f"in process {self._owner}"
        return f"<procpool.Queue maxsize={self._maxsize} {where}>"

    # -- putting

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        wait = _timeout_of(block, timeout)
        data = serialize.dumps(item)
        items = self._local_items()
        if items is None:
            self._put_remote(data, wait)
            return
        with items.lock:
            if items.closed:
                raise ValueError(f"{self!r} is closed")
            if items.full():
                end = None if wait < 0 else time.monotonic() + wait
                while items.full() and not items.closed:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise stdlib_queue.Full
                    items.not_full.wait(left)
                if items.closed:
                    raise ValueError(f"{self!r} is closed")
            items.add(data)

    def _put_remote(self, data: bytes, wait: float) -> None:
        client = _client(self._address)
        if not self._maxsize:
            with client.lock:
                client.send(PUT, self._qid, 0.0, data)  # one-way: safe once sent
            return
        reply, _ = client.request(PUT_WAIT, self._qid, wait, data)
        if reply == FULL:
            raise stdlib_queue.Full
        if reply == GONE:
            raise ValueError(f"{self!r} is closed")

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    # -- getting

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        wait = _timeout_of(block, timeout)
        items = self._local_items()
        if items is None:
            reply, data = _client(self._address).get(self._qid, wait)
            if reply == EMPTY:
                raise stdlib_queue.Empty
            if reply == GONE:
                raise ValueError(f"{self!r} is closed")
            return serialize.loads(data)
        with items.lock:
            end = None if wait < 0 else time.monotonic() + wait
            while not items.items:
                if items.closed:
                    raise ValueError(f"{self!r} is closed")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise stdlib_queue.Empty
                items.not_empty.wait(left)
            data = items.take()
        return serialize.loads(data)

    def get_nowait(self) -> Any:
        return self.get(False)

    # -- the rest

    def qsize(self) -> int:
        items = self._local_items()
        if items is not None:
            return len(items.items)
        reply, data = _client(self._address).request(SIZE, self._qid, 0.0)
        if reply == GONE:
            raise ValueError(f"{self!r} is closed")
        return int(struct.unpack("<Q", data)[0])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    def close(self) -> None:
        """In the owner: end the queue (waiters anywhere get ValueError); elsewhere, a
        no-op (the owner decides)."""
        if self._items is not None:
            self._finalizer()

    def join_thread(self) -> None:
        """For ``multiprocessing.Queue`` code: there is no feeder thread to join."""

    def cancel_join_thread(self) -> None:
        """For ``multiprocessing.Queue`` code: there is no feeder thread."""

    def _local_items(self) -> Items | None:
        if self._items is not None and os.getpid() == self._owner:
            return self._items
        return None


def _after_fork_in_child() -> None:
    """A forked child must not keep its parent's broker sockets open (a closed queue's
    address would stay bound, with nobody to answer), nor its locks as they were."""
    global _clients_lock
    broker.after_fork_in_child()
    _clients_lock = threading.Lock()
    for client in _clients.values():
        client.sock.close()
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
