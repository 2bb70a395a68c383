"""procpool side by side with its peers: ``python3 benchmarks/run.py [--quick] [...]``.

Every trial (one scenario, one peer, one repeat) runs in a process forked from this
one, so a pool's state never leaks into the next measurement, and one run measures
every peer and every floor under the same machine load. Repeats are interleaved
(repeat 1 of every peer, then repeat 2, ...) so that slow drifts in a noisy machine's
load hit every peer alike; the table reports medians.

A trial that takes longer than ``--timeout`` is reported as "timeout" and its process
tree is killed, pid by pid. This process is a child subreaper (Linux ``prctl``), so a
pool worker orphaned by its trial becomes our child: after every trial we wait a
little for such strays, then kill and count them as "leaked".
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
# Spawn-based peers (loky, joblib) start fresh interpreters that must import workloads.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)

import report  # noqa: E402
import scenarios  # noqa: E402
import workloads  # noqa: E402
from peers import PEERS  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
STRAY_GRACE = 5.0
SHM = Path("/dev/shm")


# -- process tree bookkeeping


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> list[int]:
    table = _parents()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (pp, _) in table.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a trial process and everything below it, one pid at a time."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def reap_strays(grace: float) -> int:
    """Wait for orphans re-parented to us to exit; kill what is left. Returns that count."""
    me = os.getpid()
    deadline = time.monotonic() + grace
    killed: set[int] = set()
    while True:
        alive = []
        for pid, (ppid, state) in _parents().items():
            if ppid != me:
                continue
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            else:
                alive.append(pid)
        if not alive:
            return len(killed)
        if time.monotonic() >= deadline:
            for pid in alive:
                kill_tree(pid)  # its own children come back to us, and go next turn
                killed.add(pid)
        time.sleep(0.05)


def busy_seconds() -> float:
    """CPU seconds every CPU of the machine has spent not idle (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_seconds() -> float:
    """CPU seconds of this process and its waited-for descendants."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def new_shm_entries(before: set[str]) -> list[str]:
    """Entries of /dev/shm that appeared since ``before`` and are still there a moment later.

    Named semaphores (``sem.*``) are left out: every spawn or forkserver pool on the
    machine (other programs' too) keeps its ``sem.mp-*`` files while it runs, so they
    say nothing about this trial. What is left are shared memory segments and folders.
    """
    new = {e for e in shm_entries() - before if not e.startswith("sem.")}
    if new:
        time.sleep(0.5)
        new &= shm_entries()
    return sorted(new)


# -- one trial


def _trial_main(conn: Any, peer: str, scenario: str, params: dict[str, Any]) -> None:
    try:
        result = scenarios.run_trial(peer, scenario, params)
        result["status"] = "ok"
    except BaseException as exc:
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    conn.send(result)
    conn.close()


def trial(peer: str, scenario: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh forked process, bounded by ``timeout`` seconds."""
    ctx = multiprocessing.get_context("fork")
    shm_before = shm_entries()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_trial_main, args=(writer, peer, scenario, params),
                       name=f"bench-{scenario}-{peer}")
    busy0, ours0 = busy_seconds(), tree_seconds()
    t0 = time.perf_counter()
    proc.start()
    writer.close()
    result: dict[str, Any]
    if reader.poll(timeout):
        try:
            result = reader.recv()
        except EOFError:
            proc.join(5)
            result = {"status": "error", "error": f"trial process died (exit code {proc.exitcode})"}
        # The pool is shut down already; the process only has to exit.
        proc.join(max(5.0, timeout - (time.perf_counter() - t0)))
        if proc.exitcode is None:
            result["exit"] = "hung at exit, killed"
    else:
        result = {"status": "timeout", "error": f"no result within {timeout:.0f} s"}
    if proc.exitcode is None:
        kill_tree(proc.pid)
        proc.join()
    reader.close()
    proc.close()
    result["trial_s"] = time.perf_counter() - t0
    result["leaked"] = reap_strays(STRAY_GRACE)
    # What other processes took from the machine meanwhile: a noise gauge, 0..1.
    foreign = (busy_seconds() - busy0) - (tree_seconds() - ours0)
    result["foreign_load"] = max(0.0, foreign / (time.perf_counter() - t0) / (os.cpu_count() or 1))
    result["shm_new"] = new_shm_entries(shm_before)
    return result


# -- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="repeats per scenario (default 5)")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: a smoke run")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(scenarios.SCENARIOS))
    ap.add_argument("--peers", default="", help="comma-separated peers: " + ",".join(PEERS))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per trial (default 120)")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds per scenario and peer: a peer whose next repeat would go past "
                         "it stops repeating (default 15; 0: always --repeat)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    ap.add_argument("--chart", type=Path, default=HERE / "results.png")
    ap.add_argument("--no-chart", action="store_true")
    args = ap.parse_args(argv)
    if args.quick and "--repeat" not in " ".join(argv or sys.argv):
        args.repeat = 1
    return args


def _pick(csv: str, known: list[str], what: str) -> list[str]:
    if not csv:
        return known
    chosen = [x.strip() for x in csv.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def environment() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True)
            return out.stdout.strip()
        except OSError:
            return ""

    import platform

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "../src")),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": os.getloadavg()[0],
    }


def run_scenario(sc: scenarios.Scenario, peers: list[str], params: dict[str, Any],
                 args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    peers = [p for p in peers if sc.peers is None or p in sc.peers]
    if sc.name in scenarios.FLOORS:
        peers = ["floor", *peers]
    trials: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    repeats = sc.repeats or args.repeat
    for rep in range(repeats):
        for peer in peers:
            done = trials[peer]
            if any(t["status"] == "timeout" for t in done):
                continue  # one timeout is enough: do not spend the time twice
            spent = sum(t["trial_s"] for t in done)
            if peer != "floor" and done and args.budget and spent + done[-1]["trial_s"] > args.budget:
                continue  # a slow peer: fewer repeats (the table shows how many)
            t = trial(peer, sc.name, params, args.timeout)
            done.append(t)
            shown = report.short(sc, t)
            print(f"  {sc.name:<15} {rep + 1}/{repeats} {peer:<12} {shown:>16}   "
                  f"({t['trial_s']:.1f} s, others' CPU {t['foreign_load']:.0%})", flush=True)
            if sc.name == "numpy" and t["status"] != "timeout":
                print(f"    {peer}: {len(t['shm_new'])} new /dev/shm segments left after the trial "
                      f"{t['shm_new'][:3] if t['shm_new'] else ''}", flush=True)
            if t.get("leaked") or t.get("exit"):
                print(f"    !! {peer}: {t.get('leaked', 0)} stray processes killed; {t.get('exit', '')}",
                      flush=True)
    return trials


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = _pick(args.only, list(scenarios.SCENARIOS), "scenario")
    peers = _pick(args.peers, list(PEERS), "peer")
    if not become_subreaper():
        print("warning: not a child subreaper; stray grandchildren cannot be counted", file=sys.stderr)
    env = environment()
    started = time.perf_counter()
    loops = workloads.calibrate()
    print(f"procpool benchmarks, {env['date']}, commit {env['commit']}{' (dirty)' if env['dirty'] else ''}, "
          f"peers: {', '.join(peers)}; spin({loops}) ~ 1 ms", flush=True)
    results: dict[str, Any] = {}
    for name in chosen:
        sc = scenarios.SCENARIOS[name]
        params = dict(sc.quick if args.quick else sc.full, loops=loops)
        results[name] = {"params": params, "trials": run_scenario(sc, peers, params, args)}
    env["wall_s"] = time.perf_counter() - started
    env["load_after"] = os.getloadavg()[0]
    data = {"env": env, "quick": args.quick, "repeat": args.repeat, "budget": args.budget,
            "timeout": args.timeout, "results": results}
    summary = report.summarize(data)
    data["summary"] = summary
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1))
    print()
    print(report.render(data))
    if not args.no_chart:
        report.chart(data, args.chart)
        print(f"\nchart: {args.chart}")
    print(f"json:  {args.json}\nwall time: {env['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
