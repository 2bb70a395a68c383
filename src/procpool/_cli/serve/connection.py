"""One connection's conversation, the same in both server models.

Read up to 64 KiB, reply to every complete line in what has arrived with one write,
keep the unfinished tail; repeat. Memory stays bounded by ``max_line`` plus one read,
whatever the peer sends. The socket is blocking; the idle and write timeouts are the
kernel's ``SO_RCVTIMEO``/``SO_SNDTIMEO`` (set on the listening socket, which accepted
sockets inherit), so a read or write costs one system call and no ``poll``. A write
timeout is "no progress for that long": a peer that never reads frees its worker.
"""

from __future__ import annotations

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

    def log_line(self, pid: int) -> str:
        ms = (self.ended - self.started) * 1000
        text = (
            f"conn peer={self.peer} lines={self.lines} in={self.bytes_in} "
            f"out={self.bytes_out} ms={ms:.1f} close={self.reason} worker={pid}"
        )
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
    conn: socket.socket, handler: Handler, limits: Limits, peer: str, watch: Watch | None
) -> Conversation:
    """Serve ``conn`` until the peer closes, a limit ends it, or the handler raises
    (then the connection closes and ``error`` and ``trace`` say why)."""
    talk = Conversation(peer, started=time.monotonic())
    try:
        talk.reason = _loop(conn, handler, limits, talk, watch)
    except BaseException as exc:  # SystemExit too: a handler cannot end its worker
        if watch is not None:
            watch(False)
        talk.reason = "handler error"
        talk.error = f"{type(exc).__name__}: {exc}"
        talk.trace = traceback.format_exc()
    finally:
        talk.ended = time.monotonic()
        _close(conn, linger=talk.reason == "line too long")
    return talk


def _loop(
    conn: socket.socket, handler: Handler, limits: Limits, talk: Conversation,
    watch: Watch | None,
) -> str:  # fmt: skip
    pending = b""
    while True:
        data = _read(conn)
        if data is None:
            return "idle timeout"
        if data == b"":
            return _at_eof(conn, handler, pending, talk, watch)
        if isinstance(data, str):
            return data
        talk.bytes_in += len(data)
        block = pending + data if pending else data
        cut = block.rfind(b"\n") + 1
        pending = block[cut:]
        if cut:
            reason = _answer(conn, handler, limits, block[:cut], talk, watch)
            if reason:
                return reason
        if len(pending) > limits.max_line:
            _send(conn, LINE_TOO_LONG, talk)
            return "line too long"


def _read(conn: socket.socket) -> bytes | str | None:
    """Bytes; b"" at EOF; None when idle too long; a str reason when the peer is gone."""
    try:
        return conn.recv(READ_SIZE)
    except BlockingIOError:  # SO_RCVTIMEO
        return None
    except OSError as exc:
        return f"peer gone ({exc.strerror or exc})"


def _answer(
    conn: socket.socket, handler: Handler, limits: Limits, lines: bytes,
    talk: Conversation, watch: Watch | None,
) -> str:  # fmt: skip
    """Reply to complete ``lines``; a reason to close, or ""."""
    too_long = -1
    if len(lines) > limits.max_line + 1:
        too_long = _first_long_line(lines, limits.max_line)
        if too_long >= 0:
            lines = lines[:too_long]
    if lines:
        talk.lines += lines.count(b"\n")
        if watch is not None:
            watch(True)
        try:
            reply = handler.block(lines)
        except Partial as failed:  # answer the lines before the one that failed
            _send(conn, failed.replies, talk)
            assert failed.__cause__ is not None
            raise failed.__cause__ from None
        if watch is not None:
            watch(False)
        reason = _send(conn, reply, talk)
        if reason:
            return reason
    if too_long >= 0:
        _send(conn, LINE_TOO_LONG, talk)
        return "line too long"
    return ""


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


def _at_eof(
    conn: socket.socket, handler: Handler, pending: bytes, talk: Conversation,
    watch: Watch | None,
) -> str:  # fmt: skip
    """The peer half-closed: answer an unterminated last line, then close."""
    if pending:
        talk.lines += 1
        if watch is not None:
            watch(True)
        reply = handler.last(pending)
        if watch is not None:
            watch(False)
        reason = _send(conn, reply, talk)
        if reason:
            return reason
    return "eof"


def _send(conn: socket.socket, data: bytes, talk: Conversation) -> str:
    if not data:
        return ""
    try:
        conn.sendall(data)
    except BlockingIOError:  # SO_SNDTIMEO: the peer stopped reading
        return "write timeout"
    except OSError as exc:
        return f"peer gone ({exc.strerror or exc})"
    talk.bytes_out += len(data)
    return ""


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
