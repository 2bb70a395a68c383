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
import selectors
import socket
import struct
import threading
import time
import weakref
from collections import deque
from typing import Any

from procpool._worker import serialize

# op, queue id, timeout (-1: none), payload length
_HEADER = struct.Struct("<BIdI")
_PUT, _PUT_WAIT, _GET, _ACK, _SIZE = 1, 2, 3, 4, 5
_OK, _FULL, _ITEM, _EMPTY, _COUNT, _GONE = 10, 11, 12, 13, 14, 15

_ids = itertools.count(1)


class _Items:
    """A queue's items, in the owner: local waiters on conditions, remote ones in lists."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[bytes] = deque()
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.getters: deque[tuple[_Conn, float | None]] = deque()
        self.putters: deque[tuple[_Conn, bytes, float | None]] = deque()
        self.closed = False

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)

    def add(self, data: bytes, front: bool = False) -> None:
        """An item came in (under the lock): to a remote getter waiting, or queued."""
        while self.getters:
            conn, _ = self.getters.popleft()
            if conn.give(data):
                return
        if front:
            self.items.appendleft(data)
        else:
            self.items.append(data)
        self.not_empty.notify()

    def take(self) -> bytes:
        """Take the first item (under the lock); admit a waiting remote putter."""
        data = self.items.popleft()
        while self.putters and not self.full():
            conn, waiting, _ = self.putters.popleft()
            if conn.reply(_OK):
                self.add(waiting)
        self.not_full.notify()
        return data


class _Conn:
    """The broker's end of one client's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.send_lock = threading.Lock()
        self.unacked: tuple[_Items, bytes] | None = None
        self.alive = True
        self.items_for_ack: _Items | None = None

    def send(self, op: int, payload: bytes = b"") -> bool:
        try:
            with self.send_lock:
                self.sock.sendall(_HEADER.pack(op, 0, 0.0, len(payload)) + payload)
        except OSError:
            self.alive = False
        return self.alive

    def reply(self, op: int) -> bool:
        return self.send(op)

    def give(self, data: bytes) -> bool:
        """Send an item to this getter; it counts as taken once acknowledged."""
        if not self.alive or self.items_for_ack is None:
            return False
        self.unacked = (self.items_for_ack, data)
        return self.send(_ITEM, data)


class _Broker:
    """The owner's thread serving its queues to other processes."""

    def __init__(self) -> None:
        self.address = f"\0procpool-queue-{os.getpid()}-{os.urandom(6).hex()}"
        self.queues: dict[int, _Items] = {}
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        self._listener.listen(64)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: set[_Conn] = set()
        self._stopping = False
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="procpool-queue", daemon=True)
        self._thread.start()

    def close_in_child(self) -> None:
        """In a forked child: close this copy's sockets (the thread did not come)."""
        for sock in (self._listener, self._wake_r, self._wake_w, *(c.sock for c in self._conns)):
            sock.close()
        self._selector.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._timeout()):
                    if key.data is None:
                        sock, _ = self._listener.accept()
                        conn = _Conn(sock)
                        self._conns.add(conn)
                        self._selector.register(sock, selectors.EVENT_READ, conn)
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    else:
                        self._read(key.data)
                self._expire()
        finally:
            for conn in list(self._conns):
                self._drop(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _timeout(self) -> float | None:
        deadlines = [d for q in self.queues.values() for _, d in q.getters if d is not None]
        deadlines += [d for q in self.queues.values() for _, _, d in q.putters if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for items in list(self.queues.values()):
            with items.lock:
                for conn, deadline in list(items.getters):
                    if deadline is not None and deadline <= now:
                        items.getters.remove((conn, deadline))
                        conn.reply(_EMPTY)
                for entry in list(items.putters):
                    if entry[2] is not None and entry[2] <= now:
                        items.putters.remove(entry)
                        entry[0].reply(_FULL)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buffer += data
        while len(conn.buffer) >= _HEADER.size:
            op, qid, timeout, size = _HEADER.unpack_from(conn.buffer)
            end = _HEADER.size + size
            if len(conn.buffer) < end:
                break
            payload = bytes(conn.buffer[_HEADER.size:end])
            del conn.buffer[:end]
            self._handle(conn, op, qid, timeout, payload)

    def _handle(self, conn: _Conn, op: int, qid: int, timeout: float, payload: bytes) -> None:
        if op == _ACK:
            conn.unacked = None
            return
        items = self.queues.get(qid)
        if items is None or items.closed:
            if op != _PUT:
                conn.reply(_GONE)
            return
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with items.lock:
            if op == _PUT:
                items.add(payload)
            elif op == _PUT_WAIT:
                if not items.full():
                    items.add(payload)
                    conn.reply(_OK)
                elif timeout == 0:
                    conn.reply(_FULL)
                else:
                    items.putters.append((conn, payload, deadline))
            elif op == _GET:
                conn.items_for_ack = items
                if items.items:
                    conn.give(items.take())
                elif timeout == 0:
                    conn.reply(_EMPTY)
                else:
                    items.getters.append((conn, deadline))
            elif op == _SIZE:
                conn.send(_COUNT, struct.pack("<Q", len(items.items)))

    def _drop(self, conn: _Conn) -> None:
        """A client is gone: requeue the item it did not acknowledge, forget its waits."""
        conn.alive = False
        self._conns.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.unacked is not None:
            items, data = conn.unacked
            conn.unacked = None
            with items.lock:
                items.add(data, front=True)
        for items in self.queues.values():
            with items.lock:
                items.getters = deque(g for g in items.getters if g[0] is not conn)
                items.putters = deque(p for p in items.putters if p[0] is not conn)


_broker: _Broker | None = None
_broker_lock = threading.Lock()


def _register(qid: int, items: _Items) -> str:
    global _broker
    with _broker_lock:
        if _broker is None or _broker.pid != os.getpid():
            _broker = _Broker()
        _broker.queues[qid] = items
        return _broker.address


def _unregister(qid: int, pid: int) -> None:
    global _broker
    if os.getpid() != pid:
        return
    with _broker_lock:
        broker = _broker
        if broker is None or broker.pid != pid:
            return
        items = broker.queues.pop(qid, None)
        if items is not None:
            with items.lock:
                items.closed = True
                for conn, _ in items.getters:
                    conn.reply(_GONE)
                for conn, _, _ in items.putters:
                    conn.reply(_GONE)
                items.getters.clear()
                items.putters.clear()
                items.not_empty.notify_all()
                items.not_full.notify_all()
        if not broker.queues:
            _broker = None
    if broker is not None and not broker.queues:
        broker.stop()


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

    def send(self, op: int, qid: int, timeout: float, payload: bytes = b"") -> None:
        self.sock.sendall(_HEADER.pack(op, qid, timeout, len(payload)) + payload)

    def request(self, op: int, qid: int, timeout: float, payload: bytes = b"") -> tuple[int, bytes]:
        with self.lock:
            self.send(op, qid, timeout, payload)
            reply, data = self._receive()
            if reply == _ITEM:
                self.send(_ACK, qid, 0.0)
            return reply, data

    def _receive(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= _HEADER.size:
                op, _, _, size = _HEADER.unpack_from(self.buffer)
                end = _HEADER.size + size
                if len(self.buffer) >= end:
                    data = bytes(self.buffer[_HEADER.size:end])
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
        self._items: _Items | None = _Items(self._maxsize)
        self._address = _register(self._qid, self._items)
        self._finalizer = weakref.finalize(self, _unregister, self._qid, self._owner)
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
                client.send(_PUT, self._qid, 0.0, data)  # one-way: safe once sent
            return
        reply, _ = client.request(_PUT_WAIT, self._qid, wait, data)
        if reply == _FULL:
            raise stdlib_queue.Full
        if reply == _GONE:
            raise ValueError(f"{self!r} is closed")

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    # -- getting

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        wait = _timeout_of(block, timeout)
        items = self._local_items()
        if items is None:
            reply, data = _client(self._address).request(_GET, self._qid, wait)
            if reply == _EMPTY:
                raise stdlib_queue.Empty
            if reply == _GONE:
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
        reply, data = _client(self._address).request(_SIZE, self._qid, 0.0)
        if reply == _GONE:
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

    def _local_items(self) -> _Items | None:
        if self._items is not None and os.getpid() == self._owner:
            return self._items
        return None


def _after_fork_in_child() -> None:
    """A forked child must not keep its parent's broker sockets open (a closed queue's
    address would stay bound, with nobody to answer), nor its locks as they were."""
    global _broker, _broker_lock, _clients_lock
    broker, _broker = _broker, None
    _broker_lock = threading.Lock()
    _clients_lock = threading.Lock()
    if broker is not None:
        broker.close_in_child()
    for client in _clients.values():
        client.sock.close()
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
