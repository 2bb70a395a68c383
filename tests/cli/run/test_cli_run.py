"""`procpool run`, `results` and `status`, end to end: the CLI runs as a subprocess.

Every subprocess call has a timeout. Tests that need to act "midway" synchronize on
events, never on sleeps: the target function reports on a FIFO when it reaches an
input that hangs (tests/cli_funcs.py:gated), and ``--progress always`` prints a line
after each commit. A CLI's workers are our grandchildren, so the kill tests check
themselves that they are gone (pidfd), rather than the no_leaks fixture.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proc_utils import TESTS, still_alive_after

TIMEOUT = 60.0


def cli_env(**extra: object) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env.update({key: str(value) for key, value in extra.items()})
    return env


def cli(
    *args: object, cwd: Path, stdin: str | bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m procpool ARGS`` to completion."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "procpool", *map(str, args)],
        cwd=cwd,
        input=data,
        stdin=None if data is not None else subprocess.DEVNULL,
        capture_output=True,
        env=env or cli_env(),
        timeout=TIMEOUT,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def start_cli(*args: object, cwd: Path, env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "procpool", *map(str, args)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def stored(db: Path) -> dict[int, dict[str, Any]]:
    """The results table, by line."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return {row["line"]: dict(row) for row in conn.execute("SELECT * FROM results")}


def outcomes(rows: dict[int, dict[str, Any]]) -> dict[int, tuple[Any, ...]]:
    """What a run computed, without the incidental (pids, times, run ids)."""
    return {
        line: (r["input_sha256"], r["input"], r["status"], r["result"], r["error_type"])
        for line, r in rows.items()
    }


def runs(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM runs ORDER BY id")]


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Lines:
    """Lines arriving on a pipe or FIFO, awaited with a deadline (select, no sleeps)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.seen: list[str] = []

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.seen.append(line)
                if predicate(line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; last lines: {self.seen[-5:]}"
            if select.select([self.fd], [], [], left)[0]:
                data = os.read(self.fd, 65536)
                assert data, f"end of output; last lines: {self.seen[-5:]}"
                self.buffer += data


@contextlib.contextmanager
def report_fifo(tmp_path: Path) -> Iterator[tuple[Path, Lines]]:
    """A FIFO the gated function reports "pid input" on when it starts to hang."""
    path = tmp_path / "reports.fifo"
    os.mkfifo(path)
    read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    write_fd = os.open(path, os.O_WRONLY)  # held, so the FIFO never reads as ended
    try:
        yield path, Lines(read_fd)
    finally:
        os.close(write_fd)
        os.close(read_fd)


def hanging_workers(reports: Lines, count: int) -> set[int]:
    """Wait until ``count`` distinct workers report that they hang; their pids."""
    pids: set[int] = set()
    while len(pids) < count:
        pids.add(int(reports.wait_for(lambda line: True).split()[0]))
    return pids


def assert_gone(pids: set[int], timeout: float = 20.0) -> None:
    """Each process has exited (or exits within ``timeout``)."""
    alive = still_alive_after(pids, timeout)
    assert not alive, f"workers {alive} outlived their parent"


# -- the normal run


def test_run_a_file_then_resume_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("alpha\nbeta\n\ngamma\n")
    first = cli("run", "cli_funcs:upper", "in.txt", "-j", 2, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"storing results in {tmp_path / 'procpool-run.sqlite'} (run 1)" in first.stderr
    assert "4 done, 0 failed" in first.stderr
    rows = stored(tmp_path / "procpool-run.sqlite")
    assert {line: json.loads(r["result"]) for line, r in rows.items()} == {
        1: "ALPHA",
        2: "BETA",
        3: "",
        4: "GAMMA",
    }
    row = rows[1]
    assert (row["input"], row["input_sha256"], row["status"]) == ("alpha", sha("alpha"), "done")
    assert row["result_format"] == "json" and row["attempts"] == 1 and row["run_id"] == 1
    assert row["worker_pid"] > 0 and row["ended_at"] >= row["started_at"]
    assert row["duration"] == pytest.approx(row["ended_at"] - row["started_at"], abs=1e-6)
    again = cli("run", "cli_funcs:upper", "in.txt", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to run: all 4 inputs are stored already" in again.stderr
    assert stored(tmp_path / "procpool-run.sqlite") == rows
    assert [r["state"] for r in runs(tmp_path / "procpool-run.sqlite")] == ["finished"] * 2


def test_stdin_range_file_target_and_repr_results(tmp_path: Path) -> None:
    piped = cli("run", "cli_funcs:upper", "-", "--db", "a.sqlite", cwd=tmp_path, stdin="x\ny\n")
    assert piped.returncode == 0, piped.stderr
    assert [r["result"] for r in stored(tmp_path / "a.sqlite").values()] == ['"X"', '"Y"']
    ranged = cli("run", "cli_funcs:square", "--range", 30, "--db", "b.sqlite", cwd=tmp_path)
    assert ranged.returncode == 0, ranged.stderr
    rows = stored(tmp_path / "b.sqlite")
    assert {line: (r["input"], r["result"]) for line, r in rows.items()} == {
        i + 1: (str(i), str(i * i)) for i in range(30)
    }
    target = f"{os.path.relpath(TESTS / 'cli_funcs.py', tmp_path)}:as_set"
    by_path = cli("run", target, "-", "--db", "c.sqlite", cwd=tmp_path, stdin="aa\n")
    assert by_path.returncode == 0, by_path.stderr
    row = stored(tmp_path / "c.sqlite")[1]
    assert (row["result"], row["result_format"]) == ("{'a'}", "repr")


def test_json_lines_are_arguments_and_bad_lines_fail_alone(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'[1, 2]\n{"a": 3, "b": 4}\n5\nnot json\n[6]\n')
    result = cli("run", "cli_funcs:add", "in.jsonl", "--json", "--db", "j.sqlite", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = stored(tmp_path / "j.sqlite")
    assert {line: r["result"] for line, r in rows.items() if r["status"] == "done"} == {
        1: "3",
        2: "7",
        3: "5",
        5: "6",
    }
    bad = rows[4]
    assert (bad["status"], bad["error_type"], bad["attempts"]) == ("failed", "JSONDecodeError", 0)
    assert bad["error_message"].startswith("line 4 is not valid JSON: Expecting value")
    (tmp_path / "in.txt").write_bytes(b"ok\n\xff\xfe\n")
    result = cli("run", "cli_funcs:upper", "in.txt", "--db", "u.sqlite", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = stored(tmp_path / "u.sqlite")
    assert rows[1]["status"] == "done" and rows[2]["error_type"] == "UnicodeDecodeError"
    assert "line 2 is not valid UTF-8" in rows[2]["error_message"]


def test_exceptions_are_stored_and_rerun_only_with_retry_failed(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("".join(f"{i}\n" for i in range(1, 7)))
    args = ("run", "cli_funcs:odd_fails", "in.txt", "--db", "o.sqlite")
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1
    assert "3 done, 3 failed" in first.stderr and "3 ValueError" in first.stderr
    row = stored(tmp_path / "o.sqlite")[3]
    assert (row["status"], row["error_type"], row["error_message"]) == (
        "failed",
        "ValueError",
        "3 is odd",
    )
    assert "in odd_fails" in row["traceback"] and "ValueError: 3 is odd" in row["traceback"]
    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 1
    assert "3 done, 3 failed; rerun failed ones with --retry-failed" in second.stderr
    third = cli(*args, "--retry-failed", cwd=tmp_path)
    assert third.returncode == 1
    assert "0 done, 3 failed" in third.stderr
    rows = stored(tmp_path / "o.sqlite")
    assert [(rows[i]["attempts"], rows[i]["run_id"]) for i in (1, 2, 3)] == [(2, 3), (1, 1), (2, 3)]


def test_results_in_every_format_and_status(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("1\n2\n3\n")
    assert cli("run", "cli_funcs:odd_fails", "in.txt", cwd=tmp_path).returncode == 1
    table = cli("results", cwd=tmp_path)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["line", "status", "tries", "seconds"]
    assert "ValueError: 1 is odd" in lines[1] and lines[2].split()[:2] == ["2", "done"]
    jsonl = cli("results", "--format", "jsonl", cwd=tmp_path)
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [(r["line"], r["status"], r["result"]) for r in records] == [
        (1, "failed", None),
        (2, "done", 2),
        (3, "failed", None),
    ]
    failed_csv = cli("results", "--format", "csv", "--failed", cwd=tmp_path)
    table_rows = list(csv.DictReader(io.StringIO(failed_csv.stdout)))
    assert [(r["line"], r["error_message"]) for r in table_rows] == [
        ("1", "1 is odd"),
        ("3", "3 is odd"),
    ]
    status = cli("status", cwd=tmp_path)
    assert status.returncode == 0
    assert "run 1: cli_funcs:odd_fails on" in status.stdout
    assert "state: finished after" in status.stdout
    assert "stored: 1 done, 2 failed, 0 to do (of 3 inputs)" in status.stdout


# -- crashes and timeouts


def test_a_task_that_kills_its_worker_fails_alone_after_retries(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(40)]
    words[21] = "die"
    (tmp_path / "in.txt").write_text("\n".join(words) + "\n")
    result = cli(
        "run", "cli_funcs:kill_on", "in.txt", "--chunksize", 8, "--retries", 2, "-j", 2,
        "--db", "k.sqlite", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = stored(tmp_path / "k.sqlite")
    assert sorted(rows) == list(range(1, 41))
    dead = rows[22]
    assert (dead["status"], dead["error_type"], dead["attempts"]) == (
        "failed",
        "procpool.WorkerLostError",
        3,
    )
    assert "killed by SIGKILL" in dead["error_message"] and "line 22" in dead["error_message"]
    others = [r for line, r in rows.items() if line != 22]
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in others)


def test_a_retry_can_succeed(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x\nflaky\ny\n")
    env = cli_env(CLI_TEST_MARKER=tmp_path / "marker")
    result = cli(
        "run", "cli_funcs:die_once", "in.txt", "--retries", 1, "--db", "r.sqlite",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    flaky = stored(tmp_path / "r.sqlite")[2]
    assert (flaky["status"], flaky["result"], flaky["attempts"]) == ("done", '"flaky"', 2)
    env = cli_env(CLI_TEST_MARKER=tmp_path / "marker2")
    result = cli("run", "cli_funcs:die_once", "in.txt", "--db", "n.sqlite", cwd=tmp_path, env=env)
    assert result.returncode == 1
    flaky = stored(tmp_path / "n.sqlite")[2]
    assert flaky["error_type"] == "procpool.WorkerLostError"
    assert "exited with code 3" in flaky["error_message"]


def test_a_task_over_its_time_limit_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nhang\nb\nc\n")
    started = time.monotonic()
    result = cli(
        "run", "cli_funcs:hang_on", "in.txt", "--task-timeout", 0.3, "--db", "t.sqlite",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    rows = stored(tmp_path / "t.sqlite")
    assert rows[2]["error_type"] == "procpool.TaskTimeoutError"
    assert "line 2 exceeded its time limit of 0.3s" in rows[2]["error_message"]
    assert [rows[i]["status"] for i in (1, 3, 4)] == ["done"] * 3


def test_every_start_method(tmp_path: Path, start_method: str) -> None:
    target = f"{TESTS / 'cli_funcs.py'}:kill_on"  # a file target: workers import it by path
    result = cli(
        "run", target, "-", "--start-method", start_method, "--db", "s.sqlite",
        cwd=tmp_path, stdin="a\ndie\nb\n",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = stored(tmp_path / "s.sqlite")
    assert [(r["status"], r["error_type"]) for r in rows.values()] == [
        ("done", None),
        ("failed", "procpool.WorkerLostError"),
        ("done", None),
    ]


# -- interruptions


GATE_N, GATE_AT = 300, 200


def gated_baseline(tmp_path: Path) -> dict[int, tuple[Any, ...]]:
    """An uninterrupted run of the gated function (no gate): what every run must store."""
    result = cli("run", "cli_funcs:gated", "--range", GATE_N, "--db", "base.sqlite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return outcomes(stored(tmp_path / "base.sqlite"))


def _end(proc: subprocess.Popen[str]) -> None:
    """Kill a started ``procpool run`` if it is still there; close its stderr pipe."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.stderr is not None
    proc.stderr.close()


def start_gated(tmp_path: Path, fifo: Path, db: str, **kw: Any) -> subprocess.Popen[bytes]:
    """A run whose inputs from GATE_AT on hang (after reporting on the FIFO)."""
    env = cli_env(CLI_TEST_GATE=GATE_AT, CLI_TEST_FIFO=fifo)
    return start_cli(
        "run", "cli_funcs:gated", "--range", GATE_N, "-j", 2, "--progress", "always",
        "--db", db, cwd=tmp_path, env=env, **kw,
    )  # fmt: skip


def wait_midway(proc: subprocess.Popen[bytes], reports: Lines) -> tuple[Lines, set[int]]:
    """Until some rows are committed and both workers hang: the run is midway."""
    assert proc.stderr is not None
    progress = Lines(proc.stderr.fileno())
    progress.wait_for(lambda line: re.search(r"done [1-9]", line) is not None)
    return progress, hanging_workers(reports, 2)


def test_sigkill_of_the_parent_midway_then_resume(tmp_path: Path) -> None:
    baseline = gated_baseline(tmp_path)
    with report_fifo(tmp_path) as (fifo, reports):
        proc = start_gated(tmp_path, fifo, "k.sqlite")
        try:
            _, workers = wait_midway(proc, reports)
            status = cli("status", "--db", "k.sqlite", cwd=tmp_path)
            assert f"state: running (pid {proc.pid}" in status.stdout
            assert re.search(r"stored: [1-9][\d,]* done, 0 failed", status.stdout)
            second = cli("run", "cli_funcs:gated", "--range", GATE_N, "--db", "k.sqlite",
                         cwd=tmp_path)  # fmt: skip
            assert second.returncode == 2
            assert f"another procpool run (pid {proc.pid}, run 1)" in second.stderr
        finally:
            _end(proc)
    assert_gone(workers)
    db = tmp_path / "k.sqlite"
    assert integrity(db) == "ok"
    before = stored(db)
    assert 0 < len(before) < GATE_N
    assert all(outcome == baseline[line] for line, outcome in outcomes(before).items())
    resumed = cli("run", "cli_funcs:gated", "--range", GATE_N, "--db", db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after run 1 (which did not finish: killed?)" in resumed.stderr
    after = stored(db)
    assert sorted(after) == list(range(1, GATE_N + 1))  # no gaps (and the key: no duplicates)
    assert outcomes(after) == baseline
    for line, row in before.items():  # what was committed was not redone
        assert (after[line]["run_id"], after[line]["ended_at"]) == (1, row["ended_at"])
    assert [r["state"] for r in runs(db)] == ["stopped", "finished"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stores_what_finished_and_resumes(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    baseline = gated_baseline(tmp_path)
    with report_fifo(tmp_path) as (fifo, reports):
        # Its own process group, so SIGINT goes to the group as a terminal's Ctrl-C does.
        proc = start_gated(tmp_path, fifo, "c.sqlite", start_new_session=True)
        try:
            progress, workers = wait_midway(proc, reports)
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            assert proc.wait(TIMEOUT) == status
            progress.wait_for(lambda line: "interrupted; run the same command" in line)
        finally:
            _end(proc)
    assert_gone(workers)
    db = tmp_path / "c.sqlite"
    before = stored(db)
    assert len(before) >= GATE_AT // 2
    assert all(outcome == baseline[line] for line, outcome in outcomes(before).items())
    assert runs(db)[0]["state"] == "interrupted"
    resumed = cli("run", "cli_funcs:gated", "--range", GATE_N, "--db", db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(stored(db)) == baseline


# -- what changed since the last run


def test_changed_function_and_input_are_reported(tmp_path: Path) -> None:
    module, data = tmp_path / "mymod.py", tmp_path / "in.txt"
    module.write_text("def f(line):\n    return line + '!'\n")
    data.write_text("a\nb\nc\n")
    args = ("run", "mymod.py:f", "in.txt", "--db", "c.sqlite")
    assert cli(*args, cwd=tmp_path).returncode == 0
    module.write_text("def f(line):\n    return line + '??'\n")
    data.write_text("a\nB\nc\nd\n")
    second = cli(*args, cwd=tmp_path, env=cli_env(PYTHONDONTWRITEBYTECODE=1))
    assert second.returncode == 0, second.stderr
    assert f"note: {module}:f changed since run 1 (its source differs)" in second.stderr
    assert f"note: {data} changed since run 1: lines whose content changed" in second.stderr
    rows = stored(tmp_path / "c.sqlite")
    assert {line: (r["result"], r["run_id"]) for line, r in rows.items()} == {
        1: ('"a!"', 1),
        2: ('"B??"', 2),
        3: ('"c!"', 1),
        4: ('"d??"', 2),
    }
    other = cli("run", "cli_funcs:upper", "in.txt", "--db", "c.sqlite", cwd=tmp_path)
    assert other.returncode == 2
    assert f"c.sqlite holds results of {module}:f, not cli_funcs:upper" in other.stderr
    fresh = cli(*args, "--fresh", cwd=tmp_path, env=cli_env(PYTHONDONTWRITEBYTECODE=1))
    assert fresh.returncode == 0, fresh.stderr
    rows = stored(tmp_path / "c.sqlite")
    assert [(r["result"], r["run_id"]) for r in rows.values()] == [
        ('"a??"', 3),
        ('"B??"', 3),
        ('"c??"', 3),
        ('"d??"', 3),
    ]


# -- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nosuchmodule:f", "in.txt"), "cannot import 'nosuchmodule': no module named"),
        (("cli_funcs:nosuch", "in.txt"), "module 'cli_funcs' has no 'nosuch' (its functions:"),
        (("cli_funcs", "in.txt"), "the target must be MODULE:FUNCTION"),
        (("broken.py:f", "in.txt"), "cannot import"),
        (("cli_funcs:upper", "missing.txt"), "cannot read the input file missing.txt: No such"),
        (("cli_funcs:upper", "."), "cannot read the input file .: it is a directory"),
        (("cli_funcs:upper", "in.txt", "--range", "3"), "give either an INPUT or --range"),
        (("cli_funcs:upper", "in.txt", "--jobs", "0"), "--jobs must be at least 1"),
    ],
)
def test_bad_target_or_input_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "broken.py").write_text("import nonexistent_dependency\n")
    result = cli("run", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "procpool-run.sqlite").exists()


@pytest.mark.parametrize(
    ("db", "message"),
    [
        (".", "is a directory, not a database file"),
        ("nodir/x.sqlite", "no directory"),
        ("/proc/procpool-test.sqlite", "cannot write the database"),
        ("not-sqlite.txt", "is not a usable SQLite database"),
        ("foreign.sqlite", "is not a procpool run database"),
    ],
)
def test_unusable_database_is_refused(tmp_path: Path, db: str, message: str) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "not-sqlite.txt").write_text("hello\n" * 100)
    with contextlib.closing(sqlite3.connect(tmp_path / "foreign.sqlite")) as conn:
        conn.execute("CREATE TABLE mine (x)")
    result = cli("run", "cli_funcs:upper", "in.txt", "--db", db, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "not-sqlite.txt").read_text() == "hello\n" * 100


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    assert cli("run", "cli_funcs:upper", "in.txt", "--db", "r.sqlite", cwd=tmp_path).returncode == 0
    before = stored(tmp_path / "r.sqlite")
    (tmp_path / "r.sqlite").chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        result = cli("run", "cli_funcs:upper", "in.txt", "--db", "r.sqlite", cwd=tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode == 2 and "cannot write the database" in result.stderr
    assert stored(tmp_path / "r.sqlite") == before


def test_locked_database_is_refused_then_resumes(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    args = ("run", "cli_funcs:upper", "in.txt", "--db", "l.sqlite")
    first = cli("run", "cli_funcs:upper", "-", "--db", "l.sqlite", cwd=tmp_path, stdin="a\n")
    assert first.returncode == 0, first.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "l.sqlite", isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        locked = cli(*args, cwd=tmp_path)
        conn.execute("ROLLBACK")
    assert locked.returncode == 2
    assert "is locked by another process" in locked.stderr
    after = cli(*args, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert "1 done, 0 failed" in after.stderr  # line 1 was stored by the first run
    assert [r["result"] for r in stored(tmp_path / "l.sqlite").values()] == ['"A"', '"B"']


_LIMIT_AND_EXEC = (
    "import os, resource, signal, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.argv[2], sys.argv[2:])"
)


def test_full_disk_keeps_what_was_stored_then_resumes(tmp_path: Path) -> None:
    def run_bulky(n: int, file_limit: int | None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "procpool", "run", "cli_funcs:bulky", "--range",
                   str(n), "--db", "d.sqlite"]  # fmt: skip
        if file_limit is not None:  # files may not grow past file_limit: a full disk
            command = [sys.executable, "-c", _LIMIT_AND_EXEC, str(file_limit), *command]
        return subprocess.run(
            command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=TIMEOUT,
        )  # fmt: skip

    expected = {i + 1: json.dumps(f"{i}:" + "x" * 4000) for i in range(1500)}
    assert run_bulky(100, 1 << 20).returncode == 0
    before = stored(tmp_path / "d.sqlite")
    full = run_bulky(1500, 1 << 20)
    assert full.returncode == 2, full.stderr
    assert "(is the disk full?)" in full.stderr and "Traceback" not in full.stderr
    assert integrity(tmp_path / "d.sqlite") == "ok"
    kept = stored(tmp_path / "d.sqlite")
    assert all(kept[line] == row for line, row in before.items())
    resumed = run_bulky(1500, None)
    assert resumed.returncode == 0, resumed.stderr
    assert {line: r["result"] for line, r in stored(tmp_path / "d.sqlite").items()} == expected


def test_results_and_status_without_a_database(tmp_path: Path) -> None:
    for command in ("results", "status"):
        result = cli(command, "--db", "none.sqlite", cwd=tmp_path)
        assert result.returncode == 2
        assert "no database at none.sqlite" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()
    assert cli(cwd=tmp_path).returncode == 2
    assert cli("run", cwd=tmp_path).returncode == 2


# -- the bundled example, the console script


def test_bundled_example(tmp_path: Path) -> None:
    path = subprocess.run(
        [sys.executable, "-m", "procpool.examples.words"], capture_output=True, text=True,
        timeout=TIMEOUT, check=True,
    ).stdout.strip()  # fmt: skip
    words = Path(path).read_text().splitlines()
    assert len(words) >= 500
    head = "\n".join(words[:40]) + "\n"
    result = cli("run", "procpool.examples.words:count_letters", "-", cwd=tmp_path, stdin=head)
    assert result.returncode == 0, result.stderr
    assert "40 done, 0 failed" in result.stderr
    first = json.loads(stored(tmp_path / "procpool-run.sqlite")[1]["result"])
    assert first["word"] == words[0] and first["letters"] == len(words[0])


@pytest.mark.skipif(shutil.which("procpool") is None, reason="console script not on PATH")
def test_console_script(tmp_path: Path) -> None:
    result = subprocess.run(
        ["procpool", "run", "--help"], capture_output=True, text=True, timeout=TIMEOUT,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0
    assert "resume:" in result.stdout and "exit status:" in result.stdout


# -- the pieces, without processes


def test_parse_target() -> None:
    from procpool._cli.run.target import TargetError, TargetSpec, parse_target

    assert parse_target("pkg.mod:Class.method", "/cwd") == TargetSpec(
        "pkg.mod", "", "Class.method", "/cwd"
    )
    assert parse_target("sub/tool.py:run", "/cwd") == TargetSpec(
        "", "/cwd/sub/tool.py", "run", "/cwd/sub"
    )
    for bad in ("nocolon", "mod:", ":f", "mod:not-a-name", "not a module:f"):
        with pytest.raises(TargetError):
            parse_target(bad, "/cwd")


def test_encode_result() -> None:
    from procpool._cli.run.target import encode_result

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert encode_result({"a": [1, "é"]}) == ('{"a":[1,"é"]}', "json")
    assert encode_result(None) == ("null", "json")
    assert encode_result({1, 2}) == ("{1, 2}", "repr")
    assert encode_result(float("nan")) == ("nan", "repr")
    text, fmt = encode_result(BadRepr())
    assert fmt == "repr" and "repr() failed: no" in text


def test_lines_are_keyed_and_batched_from_a_stream() -> None:
    from procpool._cli.run.input import Source, as_call

    r, w = os.pipe()
    os.write(w, b'one\r\n[1, 2]\n{"k": 3}\n\nlast-without-newline')
    os.close(w)
    items = [item for batch in Source("-", r, None, True).batches() for item in batch]
    os.close(r)
    assert [(i.line, i.text) for i in items] == [
        (1, "one"), (2, "[1, 2]"), (3, '{"k": 3}'), (4, ""), (5, "last-without-newline")
    ]
    assert items[0].sha == sha("one") and items[0].error is not None  # not JSON
    assert items[1].call == ((1, 2), {}) and items[2].call == ((), {"k": 3})
    assert as_call("x") == (("x",), {})


def test_chunk_sizes_grow_to_about_50ms_of_work() -> None:
    from procpool._cli.run.job import Chunker
    from procpool._cli.run.target import ChunkOutcome

    fixed = Chunker(7, jobs=2)
    assert [fixed.size(None) for _ in range(3)] == [7, 7, 7]
    chunker = Chunker(None, jobs=2)
    assert chunker.size(None) == 1  # nothing measured yet
    chunker.observe(ChunkOutcome(1, [0.0], [0.0001], ["1"], ["json"]))  # 0.1 ms a call
    assert [chunker.size(None) for _ in range(12)] == [2, 4, 8, 16, 32, 64, 128, 256, 500,
                                                       500, 500, 500]  # fmt: skip
    assert chunker.size(100) == 25  # near the end: keep both workers busy
    assert chunker.timeout(1, None) is None
    assert chunker.timeout(11, 1.0) == pytest.approx(1.0 + 2 * 10 * 0.0001)


def test_database_claim_commit_lookup_and_refusals(tmp_path: Path) -> None:
    from procpool._cli.run.database import Counts, DbError, RunDB, RunInfo

    path = str(tmp_path / "u.sqlite")
    info = RunInfo("m:f", "abc", "in.txt", "size=1", {"json": False})
    db = RunDB.open_for_run(path)
    try:
        claim = db.start_run(info, fresh=False)
        assert (claim.run_id, claim.previous, claim.stored_done) == (1, None, 0)
        db.add((1, "s1", "a", "done", '"A"', "json", None, None, None, 1, 9, 0.0, 1.0, 1.0, 1))
        assert db.commit_due(time.monotonic() + 1) and db.commit_deadline() is not None
        db.commit(Counts(1, 0, 0, 1))
        assert db.commit_deadline() is None
        assert {line: row["status"] for line, row in db.stored(1, 5).items()} == {1: "done"}
        assert db.counts() == (1, 0) and db.rows_after(0) == 1
        other = RunInfo("m:g", "abc", "in.txt", "size=1", {"json": False})
        with pytest.raises(DbError, match="holds results of m:f, not m:g"):
            db.start_run(other, fresh=False)
        assert db.start_run(other, fresh=True).stored_done == 0
    finally:
        db.close()
    reader = RunDB.open_for_reading(path)
    try:
        latest = reader.latest_run()
        assert latest is not None and (latest["id"], latest["target"]) == (2, "m:g")
        assert [run["state"] for run in runs(Path(path))] == ["stopped", "running"]
    finally:
        reader.close()


def test_inbox_wakes_on_a_post_from_another_thread_and_on_signals() -> None:
    import threading

    from procpool._cli.inbox import Inbox

    inbox = Inbox()
    poster = threading.Thread(target=inbox.post, args=("event",))
    poster.start()
    poster.join()
    inbox.wait(TIMEOUT)
    assert inbox.take() == ["event"]
    with inbox.catching_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        inbox.wait(TIMEOUT)
    assert inbox.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
