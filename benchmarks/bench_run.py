"""`procpool run` against a plain script and xargs: ``python3 benchmarks/bench_run.py``.

100,000 tiny inputs (one line each; the function returns a small dict), four ways:

- ``procpool run``: durable and resumable (every row in SQLite, WAL, batched commits);
- plain script: ``multiprocessing.Pool.imap_unordered`` with a worker wrapper that
  builds the very same rows (key, result as JSON, pid, times) and a parent that writes
  them to SQLite (WAL, ``executemany`` + commit every 10,000 rows), at a few chunksizes
  (the best one counts);
- ``xargs -P``: batches of lines to ``python3 bench_run.py --xargs`` (no database, no
  resume; for scale), and GNU ``parallel --pipe`` the same way when it is installed;
- ``procpool run`` again on the finished database (the cost of a no-op resume).

Prints the median of ``--repeat`` runs (interleaved) of each and the ratio of procpool
run to the best plain script; the target is at most 1.5x.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
ROW_SQL = "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
SCHEMA = """CREATE TABLE results (line INTEGER PRIMARY KEY, input_sha256 TEXT, input TEXT,
    status TEXT, result TEXT, result_format TEXT, error_type TEXT, error_message TEXT,
    traceback TEXT, attempts INTEGER, worker_pid INTEGER, started_at REAL, ended_at REAL,
    duration REAL, run_id INTEGER)"""


def tiny(line: str) -> dict[str, object]:
    """The benchmark's function: a few microseconds of work."""
    return {"n": len(line), "upper": line.upper()}


# -- the plain multiprocessing script


def _plain_work(job: tuple[int, str]) -> tuple[object, ...]:
    line_no, text = job
    started = time.time()
    begin = time.perf_counter()
    try:
        value, status, err = json.dumps(tiny(text)), "done", None
    except Exception as exc:
        value, status, err = None, "failed", exc
    took = time.perf_counter() - begin
    return (
        line_no, hashlib.sha256(text.encode()).hexdigest(), text, status, value,
        "json" if value is not None else None, type(err).__name__ if err else None,
        str(err) if err else None, None, 1, os.getpid(), started, started + took, took, 1,
    )


def plain_script(path: str, db_path: str, jobs: int, chunksize: int) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    with open(path, encoding="utf-8") as f:
        jobs_iter = ((i, line.rstrip("\n")) for i, line in enumerate(f, 1))
        with multiprocessing.Pool(jobs) as pool:
            batch: list[tuple[object, ...]] = []
            for row in pool.imap_unordered(_plain_work, jobs_iter, chunksize=chunksize):
                batch.append(row)
                if len(batch) >= 10_000:
                    _write(conn, batch)
            _write(conn, batch)
    conn.close()


def _write(conn: sqlite3.Connection, batch: list[tuple[object, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(ROW_SQL, batch)
    conn.execute("COMMIT")
    batch.clear()


# -- the xargs / parallel worker


def xargs_batch(lines: list[str]) -> None:
    out = sys.stdout
    for line in lines:
        out.write(json.dumps(tiny(line)) + "\n")


# -- measuring


def timed(cmd: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def contenders(tmp: Path, data: Path, jobs: int) -> dict[str, Callable[[], float]]:
    py = sys.executable
    db = tmp / "run.sqlite"

    def procpool_run() -> float:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return timed([py, "-m", "procpool", "run", f"{HERE}:tiny", str(data),
                      "--db", str(db), "-j", str(jobs)])

    def resume() -> float:
        return timed([py, "-m", "procpool", "run", f"{HERE}:tiny", str(data),
                      "--db", str(db), "-j", str(jobs)])

    def plain(chunksize: int) -> Callable[[], float]:
        def go() -> float:
            plain_db = tmp / "plain.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{plain_db}{suffix}").unlink(missing_ok=True)
            return timed([py, str(HERE), "--plain", str(data), str(plain_db), str(jobs),
                          str(chunksize)])
        return go

    def xargs() -> float:
        with open(data, "rb") as stdin:
            return timed(["xargs", "-d", "\n", "-P", str(jobs), "-n", "5000", py, str(HERE),
                          "--xargs"], stdin=stdin)

    found: dict[str, Callable[[], float]] = {"procpool run": procpool_run}
    for chunksize in (100, 1000, 5000):
        found[f"plain imap, chunksize {chunksize}"] = plain(chunksize)
    if shutil.which("xargs"):
        found["xargs -P (no database)"] = xargs
    if shutil.which("parallel"):
        def parallel() -> float:
            with open(data, "rb") as stdin:
                return timed(["parallel", "-j", str(jobs), "--pipe", "-N", "5000", py,
                              str(HERE), "--stdin"], stdin=stdin)
        found["GNU parallel --pipe (no database)"] = parallel
    found["procpool run, resume (nothing to do)"] = resume
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "input.txt"
        data.write_text("".join(f"item-{i}\n" for i in range(args.inputs)))
        runs = contenders(tmp, data, args.jobs)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, go in runs.items():
                times[name].append(go())
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.inputs:,} tiny inputs, {args.jobs} workers, median of {args.repeat}:")
    for name, seconds in medians.items():
        print(f"  {name:<40} {seconds:7.2f} s  ({args.inputs / seconds:,.0f} inputs/s)")
    best_plain = min(s for name, s in medians.items() if name.startswith("plain"))
    ratio = medians["procpool run"] / best_plain
    print(f"procpool run / best plain script: {ratio:.2f}x (target: at most 1.5x)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--plain":
        plain_script(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--xargs":
        xargs_batch(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--stdin":
        xargs_batch(sys.stdin.read().splitlines())
    else:
        main()
