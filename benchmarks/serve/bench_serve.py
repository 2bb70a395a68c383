"""`procpool serve` against other Python line servers, driven by `procpool loadgen`.

    python3 benchmarks/serve/bench_serve.py [--repeat 3] [--workers 2] [--json FILE]

Servers, all upper-casing lines on 127.0.0.1 (peers.py has the others):
procpool serve --mode prefork (with and without its per-connection log line, sent to
/dev/null), --mode dispatch, a minimal hand-written prefork server, and the stdlib's
socketserver.ForkingTCPServer and ThreadingTCPServer. All are started first and left
idle; then, for each repeat, each workload runs against each server in turn, so the
machine's noise spreads over all of them alike.

Workloads (one `procpool loadgen --json` process each; on a 2-core machine the load
generator takes one core, so the figures are a shared ceiling, not the servers' own):
  persistent   16 connections x 2,000 lines, each line sent after the previous reply
  per-request  16 concurrent clients x 150 connections, one line each

Prints the median lines/s or connections/s and p50/p99 latency per server, and the
ratio to the minimal prefork server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "persistent": ["-c", "16", "-n", "2000"],
    "per-request": ["-c", "16", "-n", "150", "--connect-per-request"],
}


class Running:
    """A server in its own process group, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], port_file: Path | None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        if port_file is None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode()
            self.port = int(line.rsplit(":", 1)[1])
        else:
            deadline = time.monotonic() + 30
            while not port_file.exists():  # a benchmark, not a test: a short wait is fine
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.01)
            self.port = int(port_file.read_text())

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # forked children of socketserver
        except ProcessLookupError:
            pass


def start_servers(workers: int, tmp: Path) -> list[Running]:
    serve = [sys.executable, "-m", "procpool", "serve", "--bind", "127.0.0.1:0",
             "-w", str(workers)]  # fmt: skip
    servers = [
        Running("procpool prefork", [*serve, "-q"], None),
        Running("procpool prefork, logging", serve, None),
        Running("procpool dispatch", [*serve, "-q", "--mode", "dispatch"], None),
    ]
    for name, args in (("minimal prefork", ["minimal", str(workers)]),
                       ("ForkingTCPServer", ["forking"]),
                       ("ThreadingTCPServer", ["threading"])):  # fmt: skip
        port_file = tmp / name.replace(" ", "_")
        cmd = [sys.executable, str(HERE / "peers.py"), args[0], str(port_file), *args[1:]]
        servers.append(Running(name, cmd, port_file))
    return servers


def load(port: int, workload: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "procpool", "loadgen", f"127.0.0.1:{port}", "--json",
         "--duration", "60", *WORKLOADS[workload]],
        capture_output=True, timeout=120,
    )  # fmt: skip
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = start_servers(args.workers, Path(tmp))
        try:
            for _ in range(args.repeat):
                for workload in WORKLOADS:
                    for server in servers:
                        runs.setdefault((server.name, workload), []).append(
                            load(server.port, workload)
                        )
        finally:
            for server in servers:
                server.stop()
    report(runs, args)


def report(runs: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"procpool serve benchmark: {args.workers} workers, medians of {args.repeat}, "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    rows = []
    for workload in WORKLOADS:
        unit = "conns/s" if workload == "per-request" else "lines/s"
        base = statistics.median(r["rate"] for r in runs[("minimal prefork", workload)])
        print(f"{workload:<28}{unit:>10}{'vs minimal':>12}{'p50 ms':>9}{'p99 ms':>9}  errors")
        for (name, wl), results in runs.items():
            if wl != workload:
                continue
            rate = statistics.median(r["rate"] for r in results)
            p50 = statistics.median(r["latency_ms"]["p50"] for r in results)
            p99 = statistics.median(r["latency_ms"]["p99"] for r in results)
            errors = sum(sum(r["errors"].values()) for r in results)
            print(f"  {name:<26}{rate:>10,.0f}{rate / base:>11.0%} {p50:>9.2f}{p99:>9.2f}  {errors}")
            rows.append({"server": name, "workload": workload, "rate": rate,
                         "vs_minimal": rate / base, "p50_ms": p50, "p99_ms": p99,
                         "errors": errors, "runs": [r["rate"] for r in results]})  # fmt: skip
        print()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
