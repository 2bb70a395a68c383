"""`procpool serve`'s line protocol and limits, in both models, on loopback.

Each test starts the server as a user would (``python -m procpool serve``) and talks
to it over TCP. Waits are on replies, EOFs and the server's log lines, never sleeps.
"""

from __future__ import annotations

import socket
import threading

import pytest
from serve_support import Server, ask, connect, read_all, read_lines

MODES = ["prefork", "dispatch"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_upper_keeps_line_ends_and_any_bytes(mode: str) -> None:
    payload = b"hello\r\nw\xc3\xb6rld\n\x00nul\x00\n\xff\xfe invalid utf-8\nlast, no newline"
    with Server("--mode", mode, "-w", "2") as server:
        assert ask(server, payload) == payload.upper()
    assert server.exit_code == 0


def test_echo_and_a_function_handler(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--handler", "echo") as server:
        assert ask(server, b"MiXeD\r\n\x00\n") == b"MiXeD\r\n\x00\n"
    with Server("--mode", mode, "-w", "1", "--handler", "serve_handlers:shout") as server:
        assert ask(server, b"abc\r\n\xff\nend") == "ABC!\r\n\ufffd!\nEND!".encode()


def test_pipelined_replies_come_in_order(mode: str) -> None:
    lines = [f"line {i}".encode() for i in range(5000)]
    with Server("--mode", mode, "-w", "2") as server:
        reply = ask(server, b"\n".join(lines) + b"\n")
    assert reply.split(b"\n")[:-1] == [line.upper() for line in lines]


def test_half_close_gets_every_reply_then_eof(mode: str) -> None:
    with Server("--mode", mode, "-w", "1") as server, connect(server) as sock:
        sock.sendall(b"one\ntwo\nthr")
        assert read_lines(sock, 2) == b"ONE\nTWO\n"
        sock.sendall(b"ee")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"THREE"
        server.wait_for(r"lines=3 in=13 out=13 .*close=eof")


def test_a_client_that_disconnects_mid_reply_costs_nothing(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--threads" if mode == "prefork" else "-q",
                *(["1"] if mode == "prefork" else [])) as server:  # fmt: skip
        for _ in range(3):
            with connect(server) as sock:
                sock.sendall(b"x" * 1000 + b"\n" * 20000)
                sock.recv(10)  # the replies have started
        assert ask(server, b"still here\n") == b"STILL HERE\n"


def test_a_client_that_never_reads_is_dropped_after_the_write_timeout(mode: str) -> None:
    # 10,000 lines of 2 KiB: more than the kernel buffers on both sides hold, so the
    # server's writes block once the client stops reading.
    lines = b"".join(b"%05d" % i + b"p" * 2043 + b"\n" for i in range(10000))
    with Server("--mode", mode, "-w", "1", "--write-timeout", "0.3",
                *(["--threads", "1"] if mode == "prefork" else [])) as server:  # fmt: skip
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(server.address)
        with stuck:
            sender = threading.Thread(target=_send_until_closed, args=(stuck, lines))
            sender.start()
            server.wait_for(r"close=write timeout")
            sender.join()
        # The only worker (thread) is free again.
        assert ask(server, b"next\n") == b"NEXT\n"


def _send_until_closed(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server gave up on us, as it should


def test_an_over_long_line_is_refused_and_memory_stays_bounded(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--max-line", "1024") as server:
        assert ask(server, b"ok\n" + b"y" * 2000 + b"\nnever answered\n") == (
            b"OK\nERR line too long\n"
        )
        # An endless line with no newline: the server answers and closes long before
        # a gigabyte; we stop sending when it does.
        sent = 0
        with connect(server) as sock:
            reader = _Collect(sock)
            chunk = b"z" * 65536
            try:
                while sent < 1 << 30 and not reader.done.is_set():
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # reset: the server closed while we were still sending
            reader.join()
        assert reader.data == b"ERR line too long\n"
        assert sent < 64 << 20, f"sent {sent} bytes before the server closed"
        server.wait_for(r"close=line too long", 2)


class _Collect(threading.Thread):
    """Read a socket to EOF in the background."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock, self.data, self.done = sock, b"", threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.data = read_all(self.sock)
        except OSError:
            pass
        self.done.set()


def test_idle_clients_are_closed_and_do_not_starve_others(mode: str) -> None:
    extra = ["--threads", "4"] if mode == "prefork" else ["--queue", "0"]
    workers = "1" if mode == "prefork" else "4"
    with Server("--mode", mode, "-w", workers, "--idle-timeout", "0.5", *extra) as server:
        idle = [connect(server) for _ in range(3)]
        try:
            assert ask(server, b"busy one\n") == b"BUSY ONE\n"
            for sock in idle:
                assert read_all(sock) == b""  # the server closed it
        finally:
            for sock in idle:
                sock.close()
        server.wait_for(r"close=idle timeout", 3)


def test_overload_gets_err_busy_at_once(mode: str) -> None:
    extra = ["--threads", "2"] if mode == "prefork" else []
    with Server("--mode", mode, "-w", "2", "--max-connections", "2", *extra) as server:
        held = [connect(server) for _ in range(2)]
        try:
            for sock in held:  # both in service
                sock.sendall(b"hold\n")
                assert read_lines(sock, 1) == b"HOLD\n"
            with connect(server) as extra_client:
                assert read_all(extra_client) == b"ERR busy\n"
            server.wait_for(r"close=busy")
        finally:
            for sock in held:
                sock.close()
        server.wait_for(r"lines=1 .*close=eof", 2)
        assert ask(server, b"room again\n") == b"ROOM AGAIN\n"


def test_a_handler_that_raises_closes_only_its_connection(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--handler", "serve_handlers:moody") as server:
        before = ask(server, b"pid\n")
        assert ask(server, b"fine\nboom\nnever\n") == b"fine\n"
        server.wait_for(r"ValueError: boom requested")
        assert ask(server, b"exit\n") == b""  # SystemExit too ends only the connection
        assert ask(server, b"quiet\nnot_bytes\n") == b"not_bytes\n"
        assert ask(server, b"pid\n") == before  # the same worker
    assert server.exit_code == 0


def test_a_bad_reply_type_is_a_handler_error(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--handler", "serve_handlers:not_bytes") as server:
        assert ask(server, b"abc\n") == b""
        server.wait_for(r"HandlerError: handler serve_handlers:not_bytes returned int")


def test_a_stuck_handler_is_stopped_and_its_worker_replaced(mode: str) -> None:
    with Server("--mode", mode, "-w", "1", "--handler", "serve_handlers:moody",
                "--handler-timeout", "0.3") as server:  # fmt: skip
        first = ask(server, b"pid\n")
        assert ask(server, b"hang\n") == b""
        server.wait_for(r"handler.timeout")
        second = ask(server, b"pid\n")
        assert second not in (b"", first)
