"""`procpool client` and `procpool loadgen` against a running `procpool serve`."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from serve_support import WAIT, Server, env, procpool_cmd


def run(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        procpool_cmd(*args), input=stdin, capture_output=True, timeout=WAIT * 2, env=env(),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def test_client_sends_stdin_and_prints_every_reply() -> None:
    lines = b"".join(b"line %d\n" % i for i in range(2000)) + b"tail without newline"
    with Server("-w", "2") as server:
        proc = run("client", f"127.0.0.1:{server.port}", stdin=lines)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == lines.upper()


def test_client_reports_a_refused_connection() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proc = run("client", f"127.0.0.1:{port}", stdin=b"x\n")
    assert proc.returncode == 1
    assert b"cannot connect to 127.0.0.1:" in proc.stderr


@pytest.mark.parametrize(
    "mode_args, unit",
    [([], "closed"), (["--connect-per-request"], "per-request"),
     (["--rate", "400", "--duration", "0.5"], "open")],
)  # fmt: skip
def test_loadgen_reports_rates_latency_and_no_errors(mode_args: list[str], unit: str) -> None:
    with Server("-w", "2", "-q") as server:
        proc = run("loadgen", f"127.0.0.1:{server.port}", "-c", "4", "-n", "50",
                   "--json", *mode_args)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == unit
    assert report["errors"] == {}
    expected = 200 if unit == "open" else 4 * 50
    assert report["ok"] == report["requests"] == expected
    assert report["rate"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_loadgen_counts_wrong_replies_and_busy_servers() -> None:
    with Server("-w", "1", "--handler", "echo", "-q") as server:
        proc = run("loadgen", f"127.0.0.1:{server.port}", "-c", "2", "-n", "5", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["errors"] == {"mismatch": 2}  # each client stops at one
    with Server("-w", "1", "--threads", "1", "--max-connections", "1", "-q") as server:
        proc = run("loadgen", f"127.0.0.1:{server.port}", "-c", "1", "-n", "3",
                   "--slow-clients", "1", "--duration", "5", "--json")  # fmt: skip
    report = json.loads(proc.stdout)
    # The slow client holds the one slot or is itself turned away: either way,
    # every failure is an ERR busy, nothing hangs.
    assert set(report["errors"]) <= {"busy"}


def test_loadgen_table_and_a_refusing_address() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proc = run("loadgen", f"127.0.0.1:{port}", "-c", "2", "-n", "3")
    assert proc.returncode == 1
    assert b"refused 6" in proc.stdout
    assert b"latency ms" in proc.stdout


def test_loadgen_usage_errors() -> None:
    proc = run("loadgen", "127.0.0.1:1", "-c", "0")
    assert proc.returncode == 2
    assert b"--connections must be more than 0" in proc.stderr


def test_loadgen_splits_over_processes() -> None:
    with Server("-w", "2", "-q") as server:
        proc = run("loadgen", f"127.0.0.1:{server.port}", "-c", "4", "-n", "25",
                   "--processes", "2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] == 100
