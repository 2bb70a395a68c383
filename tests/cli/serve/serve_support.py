"""Running `procpool serve` as a user does, and talking to it, for the serve tests.

The server is a subprocess on 127.0.0.1 port 0; its stdout's first line gives the port
(it is printed only once the socket listens). A thread collects its stderr lines so a
test can wait for one (a worker ready, a connection's log line) instead of sleeping.
Its workers are our grandchildren: the tests check themselves that they are gone.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from proc_utils import TESTS, still_alive_after

HERE = Path(__file__).resolve().parent
WAIT = 20.0  # deadlock detector: far longer than anything here takes


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(TESTS), e.get("PYTHONPATH")) if p
    )
    return e


def procpool_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "procpool", *map(str, args)]


class Server:
    """``procpool serve ARGS --bind 127.0.0.1:0`` in a subprocess."""

    def __init__(self, *args: object, bind: str = "127.0.0.1:0") -> None:
        self.proc = subprocess.Popen(
            procpool_cmd("serve", "--bind", bind, *args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env(),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().decode()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", first)
        assert match, f"server did not listen: {first!r} {self.drain_log()}"
        self.port = int(match.group(1))
        self.address = ("127.0.0.1", self.port)
        self.exit_code: int | None = None

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def drain_log(self) -> list[str]:
        while True:
            try:
                self.log.append(self.lines.get_nowait())
            except queue.Empty:
                return self.log

    def wait_for(self, pattern: str, count: int = 1, timeout: float = WAIT) -> list[str]:
        """Wait until ``count`` log lines (seen so far in all) match ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.drain_log() if regex.search(line)]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                raise AssertionError(f"no {count} lines matching {pattern!r}: {self.log}")
            try:
                self.log.append(self.lines.get(timeout=left))
            except queue.Empty:
                pass

    def workers(self) -> set[int]:
        """The server's child processes, from /proc."""
        return _children(self.proc.pid)

    def descendants(self) -> set[int]:
        """Children, grandchildren... (a procpool Pool forks workers from a zygote)."""
        found: set[int] = set()
        todo = [self.proc.pid]
        while todo:
            kids = _children(todo.pop())
            found |= kids
            todo.extend(kids)
        return found

    def ready_workers(self, count: int) -> list[int]:
        lines = self.wait_for(r"worker \d+ ready", count)
        return [int(re.search(r"worker (\d+)", line).group(1)) for line in lines]  # type: ignore[union-attr]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        """Signal the server, wait for it, and check that no worker is left."""
        if self.exit_code is not None:
            return self.exit_code
        workers = self.descendants() if self.proc.poll() is None else set()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()
            raise
        finally:
            self._reader.join(WAIT)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            assert self.proc.stderr is not None
            self.proc.stderr.close()
            self.drain_log()
        assert not still_alive_after(workers, WAIT), f"workers left: {workers}"
        return self.exit_code

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(kid) for kid in f.read().split())
    except FileNotFoundError:  # it exited meanwhile
        pass
    return found


def connect(server: Server, timeout: float = WAIT) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=timeout)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server's EOF."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_lines(sock: socket.socket, count: int) -> bytes:
    """Exactly ``count`` lines (or fewer, at EOF)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def ask(server: Server, payload: bytes) -> bytes:
    """Send ``payload``, half-close, return every byte of the reply."""
    with connect(server) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
