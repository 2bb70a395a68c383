"""One connection's conversation, the same in both server models.

Read up to 64 KiB, reply to every complete line in what has arrived with one write,
keep the unfinished tail; repeat. Memory stays bounded by ``max_line`` plus one read,
whatever the peer sends. The socket is blocking; the idle and write timeouts are the
kernel's ``SO_RCVTIMEO``/``SO_SNDTIMEO`` (set on the listening socket, which accepted
sockets inherit), so a read or write costs one system call and no ``poll``. A write
timeout is "no progress for that long": a peer that never reads frees its worker.
"""

from __future__ import annotations

import select
import socket
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from procpool._cli.serve.handlers import Handler, Partial

READ_SIZE = 65536
LINE_TOO_LONG = b"ERR line too long\n"
BUSY = b"ERR busy\n"
FIRST_LINE_GRACE = 0.002


@dataclass(frozen=True, slots=True)
class Limits:
    max_line: int
    idle_timeout: float | None
    write_timeout: float | None


@dataclass(slots=True)
class Conversation:
    """What one connection did: the facts of its log line."""

    peer: str
    lines: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = 0.0
    ended: float = 0.0
    reason: str = ""
    error: str = ""
    trace: str = ""

    def log_line(self, pid: int | None = None) -> str:
        """The access-log line; ``worker=PID`` when a worker process served it."""
        ms = (self.ended - self.started) * 1000
        text = (
            f"conn peer={self.peer} lines={self.lines} in={self.bytes_in} "
            f"out={self.bytes_out} ms={ms:.1f} close={self.reason}"
        )
        text += f" worker={pid}" if pid is not None else ""
        return text + (f" error={self.error}" if self.error else "")


def peer_name(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def set_timeouts(sock: socket.socket, limits: Limits) -> None:
    """Kernel timeouts on ``sock`` (a listener: its accepted sockets inherit them)."""
    for option, seconds in (
        (socket.SO_RCVTIMEO, limits.idle_timeout),
        (socket.SO_SNDTIMEO, limits.write_timeout),
    ):
        if seconds:
            whole = int(seconds)
            sock.setsockopt(
                socket.SOL_SOCKET, option,
                struct.pack("ll", whole, int((seconds - whole) * 1e6)),
            )  # fmt: skip


Watch = Callable[[bool], None]  # called True as a handler starts, False as it ends


def converse(
    conn: socket.socket, handler: Handler, limits: Limits, peer: str,
    watch: Watch | None = None, before_wait: Callable[[], None] | None = None,
    *, shared: bool = False,
) -> Conversation:  # fmt: skip
    """Serve ``conn`` until the peer closes, a limit ends it, or the handler raises
    (then the connection closes and ``error`` and ``trace`` say why).

    ``before_wait`` is called once, before the first read or write that would block
    (a prefork worker passes on its turn to accept then: see worker.py). A
    ``shared`` socket (another process holds it too) is shut down before it closes.
    """
    session = _Session(conn, handler, limits, Conversation(peer, started=time.monotonic()))
    session.watch, session.before_wait = watch, before_wait
    talk = session.talk
    try:
        talk.reason = session.run()
    except BaseException as exc:  # SystemExit too: a handler cannot end its worker
        if watch is not None:
            watch(False)
        talk.reason = "handler error"
        talk.error = f"{type(exc).__name__}: {exc}"
        talk.trace = traceback.format_exc()
    finally:
        talk.ended = time.monotonic()
        if talk.reason == "line too long":
            _close(conn, linger=True)
        elif shared:
            _close(conn)
        else:
            conn.close()  # ours alone: close sends FIN
    return talk


class _Session:
    __slots__ = ("before_wait", "conn", "handler", "limits", "talk", "watch")

    def __init__(
        self, conn: socket.socket, handler: Handler, limits: Limits, talk: Conversation
    ) -> None:
        self.conn, self.handler, self.limits, self.talk = conn, handler, limits, talk
        self.watch: Watch | None = None
        self.before_wait: Callable[[], None] | None = None

    def run(self) -> str:
        """The reason the conversation ended."""
        pending = b""
        while True:
            data = self._read()
            if data is None:
                return "idle timeout"
            if data == b"":
                return self._at_eof(pending)
            if isinstance(data, str):
                return data
            self.talk.bytes_in += len(data)
            block = pending + data if pending else data
            cut = block.rfind(b"\n") + 1
            pending = block[cut:]
            if cut:
                reason = self._answer(block[:cut])
                if reason:
                    return reason
            if len(pending) > self.limits.max_line:
                self._send(LINE_TOO_LONG)
                return "line too long"

    def _waiting(self) -> None:
        if self.before_wait is not None:
            self.before_wait()
            self.before_wait = None

    def _read(self) -> bytes | str | None:
        """Bytes; b"" at EOF; None when idle too long; a str reason when the peer is gone."""
        try:
            if self.before_wait is not None:
                try:
                    return self.conn.recv(READ_SIZE, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
                # A new client's first line is usually microseconds behind its
                # connection: wait that long before calling it a waiting client.
                if self.talk.bytes_in == 0 and _readable(self.conn, FIRST_LINE_GRACE):
                    return self.conn.recv(READ_SIZE)
                self._waiting()
            return self.conn.recv(READ_SIZE)
        except BlockingIOError:  # SO_RCVTIMEO
            return None
        except OSError as exc:
            return f"peer gone ({exc.strerror or exc})"

    def _call(self, lines: bytes, last: bool = False) -> bytes:
        if self.watch is not None:
            self.watch(True)
        try:
            reply = self.handler.last(lines) if last else self.handler.block(lines)
        except Partial as failed:  # answer the lines before the one that failed
            self._send(failed.replies)
            assert failed.__cause__ is not None
            raise failed.__cause__ from None
        if self.watch is not None:
            self.watch(False)
        return reply

    def _answer(self, lines: bytes) -> str:
        """Reply to complete ``lines``; a reason to close, or ""."""
        too_long = -1
        if len(lines) > self.limits.max_line + 1:
            too_long = _first_long_line(lines, self.limits.max_line)
            if too_long >= 0:
                lines = lines[:too_long]
        if lines:
            self.talk.lines += lines.count(b"\n")
            reason = self._send(self._call(lines))
            if reason:
                return reason
        if too_long >= 0:
            self._send(LINE_TOO_LONG)
            return "line too long"
        return ""

    def _at_eof(self, pending: bytes) -> str:
        """The peer half-closed: answer an unterminated last line, then close."""
        if pending:
            self.talk.lines += 1
            reason = self._send(self._call(pending, last=True))
            if reason:
                return reason
        return "eof"

    def _send(self, data: bytes) -> str:
        if not data:
            return ""
        try:
            if self.before_wait is not None:
                sent = self.conn.send(data, socket.MSG_DONTWAIT)
                self.talk.bytes_out += sent
                data = data[sent:]
                if data:
                    self._waiting()
            if data:
                self.conn.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO: the peer stopped reading
            return "write timeout"
        except OSError as exc:
            return f"peer gone ({exc.strerror or exc})"
        self.talk.bytes_out += len(data)
        return ""


def _readable(conn: socket.socket, seconds: float) -> bool:
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def _first_long_line(lines: bytes, max_line: int) -> int:
    """The offset of the first line longer than ``max_line`` (newline and CR aside)."""
    start = 0
    while start < len(lines):
        end = lines.index(b"\n", start)
        length = end - start - (1 if end > start and lines[end - 1] == 13 else 0)
        if length > max_line:
            return start
        start = end + 1
    return -1


LINGER_SECONDS = 0.5
LINGER_BYTES = 1 << 20


def _close(conn: socket.socket, linger: bool = False) -> None:
    """Send FIN even if another process still holds the socket (dispatch mode).

    With ``linger`` (the peer is still sending: an over-long line), read and drop
    what comes for a moment first: closing with unread data sends a reset, and a
    reset can discard the error message before the peer reads it.
    """
    try:
        if linger:
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES and time.monotonic() < deadline:
                chunk = conn.recv(READ_SIZE)
                if not chunk:
                    break
                drained += len(chunk)
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def bounce(conn: socket.socket) -> None:
    """Tell a client the server is full, without waiting on it."""
    try:
        conn.setblocking(False)
        conn.send(BUSY)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(READ_SIZE)  # what it already sent, so close does not reset
    except OSError:
        pass
    conn.close()
