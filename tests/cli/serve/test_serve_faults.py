"""`procpool serve` under faults and signals: killed workers and parents, SIGTERM and
SIGHUP under load, SIGTTIN/SIGTTOU, recycling, crash loops, a port in use.

Load comes from client threads that each send a line, check its reply, and repeat
until told to stop; every reply is checked, so a truncated or wrong reply fails the
test. The server's log lines say when a worker is ready or gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections import Counter

import pytest
from serve_support import WAIT, Server, ask, connect, env, port_is_free, procpool_cmd

from proc_utils import still_alive_after


class Load:
    """``clients`` threads, persistent or connect-per-request, until ``stop()``."""

    def __init__(self, server: Server, clients: int, per_request: bool = False) -> None:
        self.server = server
        self.per_request = per_request
        self.stopping = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[bytes] = []
        self.first = threading.Barrier(clients + 1)
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]
        for thread in self.threads:
            thread.start()
        self.first.wait(WAIT)  # every client has had one reply

    def _client(self, n: int) -> None:
        first = True
        while not self.stopping.is_set():
            try:
                with connect(self.server) as sock:
                    i = 0
                    while not self.stopping.is_set():
                        line = b"client %d line %d\n" % (n, i)
                        sock.sendall(line)
                        reply = _read_line(sock)
                        if reply == b"":
                            self.outcomes["closed"] += 1
                            break
                        if reply != line.upper():
                            self.wrong.append(reply)
                        self.outcomes["ok"] += 1
                        i += 1
                        if first:
                            first = False
                            self.first.wait(WAIT)
                        if self.per_request:
                            break
            except ConnectionRefusedError:
                self.outcomes["refused"] += 1
                break
            except OSError as exc:
                self.outcomes[type(exc).__name__] += 1

    def stop(self) -> Counter[str]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(WAIT)
        assert not self.wrong, self.wrong[:3]
        return self.outcomes


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return data  # b"" or a truncated reply: the caller tells
        data += chunk
    return data


def test_a_killed_worker_fails_only_its_connections_and_is_replaced() -> None:
    with Server("-w", "2", "--threads", "4") as server:
        pids = server.ready_workers(2)
        load = Load(server, clients=6)
        os.kill(pids[0], signal.SIGKILL)
        server.wait_for(rf"worker {pids[0]} was killed by SIGKILL; starting another")
        [new] = [p for p in server.ready_workers(3) if p not in pids]
        outcomes = load.stop()
        assert outcomes["ok"] > 6
        # Only connections the dead worker held broke: at most its 4 threads' worth.
        assert outcomes["closed"] + outcomes["ConnectionResetError"] <= 4
        assert new in server.workers()
    assert server.exit_code == 0


def test_a_killed_dispatch_worker_fails_only_its_connection() -> None:
    with Server("--mode", "dispatch", "-w", "2", "--handler", "serve_handlers:moody") as server:
        with connect(server) as victim, connect(server) as other:
            victim.sendall(b"pid\n")
            pid = int(_read_line(victim))
            other.sendall(b"other\n")
            assert _read_line(other) == b"other\n"
            os.kill(pid, signal.SIGKILL)
            assert victim.recv(10) == b""
            server.wait_for(r"close=worker lost error=WorkerLostError")
            other.sendall(b"still\n")
            assert _read_line(other) == b"still\n"
        assert ask(server, b"after\n") == b"after\n"


@pytest.mark.parametrize("mode", ["prefork", "dispatch"])
def test_kill_9_of_the_server_leaves_no_worker_and_frees_the_port(mode: str) -> None:
    server = Server("--mode", mode, "-w", "2")
    try:
        assert ask(server, b"x\n") == b"X\n"
        if mode == "prefork":
            server.ready_workers(2)
        else:
            server.wait_for(r"pool ready")
        workers = server.descendants()
        assert workers
        server.proc.kill()
        assert server.proc.wait(WAIT) == -signal.SIGKILL
        assert not still_alive_after(workers, WAIT)
        assert port_is_free(server.port)
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["prefork", "dispatch"])
def test_sigterm_under_load_truncates_no_reply(mode: str) -> None:
    with Server("--mode", mode, "-w", "2", "--graceful-timeout", "5") as server:
        load = Load(server, clients=2 if mode == "dispatch" else 6)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping: finishing open connections")
        assert server.proc.wait(WAIT) == 0
        outcomes = load.stop()  # every reply read was whole (Load checks each)
    assert outcomes["ok"] >= 2
    assert server.exit_code == 0


def test_sighup_replaces_every_worker_refusing_no_connection() -> None:
    with Server("-w", "2", "--threads", "2") as server:
        old = set(server.ready_workers(2))
        load = Load(server, clients=3, per_request=True)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(r"replaced \(SIGHUP\)", 2)
        ready = server.ready_workers(4)
        outcomes = load.stop()
        assert outcomes["refused"] == 0
        assert outcomes["ok"] > 3
        new = set(ready) - old
        assert len(new) == 2
        assert still_alive_after(old, WAIT) == []
        assert server.workers() == new


def test_sigttin_and_sigttou_add_and_remove_a_worker() -> None:
    with Server("-w", "1") as server:
        server.ready_workers(1)
        server.proc.send_signal(signal.SIGTTIN)
        server.wait_for(r"SIGTTIN: 2 workers")
        pids = server.ready_workers(2)
        assert server.workers() == set(pids)
        server.proc.send_signal(signal.SIGTTOU)
        server.wait_for(r"SIGTTOU: 1 workers")
        [gone] = server.wait_for(r"worker \d+ exited .*fewer workers wanted")
        assert still_alive_after([int(gone.split()[3])], WAIT) == []
        assert len(server.workers()) == 1
        assert ask(server, b"one\n") == b"ONE\n"


def test_max_requests_recycles_a_worker() -> None:
    with Server("-w", "1", "--max-requests", "2", "--handler", "serve_handlers:moody") as server:
        first = ask(server, b"pid\n")
        assert ask(server, b"pid\n") == first
        server.wait_for(r"served --max-requests")
        server.ready_workers(2)
        assert ask(server, b"pid\n") not in (first, b"")


@pytest.mark.parametrize("mode", ["prefork", "dispatch"])
def test_workers_that_cannot_start_end_the_server_with_a_clear_message(mode: str) -> None:
    proc = subprocess.run(
        procpool_cmd("serve", "--bind", "127.0.0.1:0", "--mode", mode, "-w", "1",
                     "--worker-init", "serve_handlers:failing_init"),
        capture_output=True, timeout=WAIT * 2, env=env(),
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "cannot open the database (on purpose)" in err
    if mode == "prefork":
        assert "workers keep dying (5 in a row)" in err
        assert "its --worker-init raised" in err
    else:
        assert "the workers cannot start" in err


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            procpool_cmd("serve", "--bind", f"127.0.0.1:{port}"),
            capture_output=True, timeout=WAIT, env=env(),
        )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr.decode()
    assert "pick another port" in proc.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bind", "nonsense"], "expected HOST:PORT"),
        (["--handler", "nope"], "expected upper, echo or MODULE:FUNCTION"),
        (["--handler", "no_such_module_here:f"], "cannot import no_such_module_here"),
        (["--handler", "serve_handlers:missing"], "serve_handlers has no missing"),
        (["--handler", "serve_handlers:NOT_CALLABLE"], "NOT_CALLABLE is not callable"),
        (["--mode", "dispatch", "--threads", "2"], "--threads applies to --mode prefork"),
        (["--queue", "3"], "--queue applies to --mode dispatch"),
        (["--workers", "0"], "expected a whole number of 1 or more"),
        (["--idle-timeout", "-1"], "expected 0 or more seconds"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(args: list[str], message: str) -> None:
    proc = subprocess.run(
        procpool_cmd("serve", *args), capture_output=True, timeout=WAIT, env=env()
    )
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
