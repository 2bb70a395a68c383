"""The broker of procpool.Queue: the owner's thread that serves its queues' items to
other processes over a Unix socket in the abstract namespace (see shared_queue.py).

Owner: the broker owns the items of every Queue its process made (``Items``: the
deque, the local waiters' conditions, the remote getters and putters waiting with
their deadlines) and each client connection's unacknowledged item.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time
from collections import deque

# op, queue id, timeout (-1: none), payload length
HEADER = struct.Struct("<BIdI")
PUT, PUT_WAIT, GET, ACK, SIZE = 1, 2, 3, 4, 5
OK, FULL, ITEM, EMPTY, COUNT, GONE = 10, 11, 12, 13, 14, 15
# An ITEM frame holds one or more items, each after its length. A GET says how many it
# may take at most (a consumer that comes back fast takes several: see Queue.get).
_LEN = struct.Struct("<I")
WANT = _LEN


class Items:
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
            if conn.reply(OK):
                self.add(waiting)
        self.not_full.notify()
        return data


class _Conn:
    """The broker's end of one client's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.send_lock = threading.Lock()
        # Items sent to this client that it has not acknowledged yet, oldest first.
        self.unacked: deque[tuple[Items, bytes]] = deque()
        self.alive = True
        self.items_for_ack: Items | None = None

    def send(self, op: int, payload: bytes = b"") -> bool:
        try:
            with self.send_lock:
                self.sock.sendall(HEADER.pack(op, 0, 0.0, len(payload)) + payload)
        except OSError:
            self.alive = False
        return self.alive

    def reply(self, op: int) -> bool:
        return self.send(op)

    def give(self, *batch: bytes) -> bool:
        """Send items to this getter (one frame); each counts as taken once it is
        acknowledged. False if the client is gone (the items were not taken)."""
        items = self.items_for_ack
        if not self.alive or items is None:
            return False
        # Marked before they are sent: the acknowledgements may come back at once.
        self.unacked.extend((items, data) for data in batch)
        payload = b"".join(_LEN.pack(len(data)) + data for data in batch)
        if not self.send(ITEM, payload):
            for _ in batch:  # (dead: the items stay in the queue)
                self.unacked.pop()
            return False
        return True


class _Broker:
    """The owner's thread serving its queues to other processes."""

    def __init__(self) -> None:
        self.address = f"\0procpool-queue-{os.getpid()}-{os.urandom(6).hex()}"
        self.queues: dict[int, Items] = {}
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
                        conn.reply(EMPTY)
                for entry in list(items.putters):
                    if entry[2] is not None and entry[2] <= now:
                        items.putters.remove(entry)
                        entry[0].reply(FULL)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.buffer += data
        while len(conn.buffer) >= HEADER.size:
            op, qid, timeout, size = HEADER.unpack_from(conn.buffer)
            end = HEADER.size + size
            if len(conn.buffer) < end:
                break
            payload = bytes(conn.buffer[HEADER.size:end])
            del conn.buffer[:end]
            self._handle(conn, op, qid, timeout, payload)

    def _handle(self, conn: _Conn, op: int, qid: int, timeout: float, payload: bytes) -> None:
        if op == ACK:
            if conn.unacked:
                conn.unacked.popleft()
            return
        items = self.queues.get(qid)
        if items is None or items.closed:
            if op != PUT:
                conn.reply(GONE)
            return
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with items.lock:
            if op == PUT:
                items.add(payload)
            elif op == PUT_WAIT:
                if not items.full():
                    items.add(payload)
                    conn.reply(OK)
                elif timeout == 0:
                    conn.reply(FULL)
                else:
                    items.putters.append((conn, payload, deadline))
            elif op == GET:
                conn.items_for_ack = items
                if items.items:
                    want = _LEN.unpack(payload)[0] if payload else 1
                    count = max(1, min(want, len(items.items) // 2))
                    batch = [items.take() for _ in range(count)]
                    if not conn.give(*batch):
                        for data in reversed(batch):
                            items.add(data, front=True)
                elif timeout == 0:
                    conn.reply(EMPTY)
                else:
                    items.getters.append((conn, deadline))
            elif op == SIZE:
                conn.send(COUNT, struct.pack("<Q", len(items.items)))

    def _drop(self, conn: _Conn) -> None:
        """A client is gone: requeue the item it did not acknowledge, forget its waits."""
        conn.alive = False
        self._conns.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        while conn.unacked:  # back to the front, in their order
            items = conn.unacked[-1][0]
            with items.lock:  # (the lock a give() to this client holds)
                if conn.unacked:
                    _, data = conn.unacked.pop()
                    items.add(data, front=True)
        for items in self.queues.values():
            with items.lock:
                items.getters = deque(g for g in items.getters if g[0] is not conn)
                items.putters = deque(p for p in items.putters if p[0] is not conn)


_broker: _Broker | None = None
_broker_lock = threading.Lock()


def register(qid: int, items: Items) -> str:
    global _broker
    with _broker_lock:
        if _broker is None or _broker.pid != os.getpid():
            _broker = _Broker()
        _broker.queues[qid] = items
        return _broker.address


def unregister(qid: int, pid: int) -> None:
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
                    conn.reply(GONE)
                for conn, _, _ in items.putters:
                    conn.reply(GONE)
                items.getters.clear()
                items.putters.clear()
                items.not_empty.notify_all()
                items.not_full.notify_all()
        if not broker.queues:
            _broker = None
    if broker is not None and not broker.queues:
        broker.stop()


def after_fork_in_child() -> None:
    """A forked child must not keep its parent's broker sockets open (a closed queue's
    address would stay bound, with nobody to answer), nor its lock as it was."""
    global _broker, _broker_lock
    broker, _broker = _broker, None
    _broker_lock = threading.Lock()
    if broker is not None:
        broker.close_in_child()
