"""The scenarios: what one trial measures, for a peer and for the floor.

A trial runs in its own process (``run.py`` forks it), measures one scenario once for
one peer, and returns a dict whose ``value`` is the scenario's headline number in
``Scenario.unit``. Pool start-up, warm-up and shut-down stay outside the timing except
in ``start``, which measures exactly that.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import workloads
from peers import PEERS, Peer

perf = time.perf_counter
MB = 1e6
APPLY_CAP_S = 3.0  # apply: stop a slow peer's calls after this long (at least 100 calls)


@dataclass(frozen=True)
class Scenario:
    """One row of the table."""

    name: str
    title: str
    unit: str
    higher_is_better: bool
    full: dict[str, int]
    quick: dict[str, int]
    floor_label: str = ""
    peers: tuple[str, ...] | None = None  # None: every peer
    repeats: int | None = None  # None: --repeat
    issue: str = ""
    extra: dict[str, str] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("apply", "apply latency (no-op round trip)", "µs", False,
                 {"calls": 2000}, {"calls": 300}, "pickled ping-pong over os.pipe", issue="#2"),
        Scenario("throughput", "apply_async/submit throughput (no-op)", "tasks/s", True,
                 {"tasks": 20_000}, {"tasks": 2000}, issue="#2"),
        Scenario("map", "map over small items, default chunksize", "s", False,
                 {"items": 1_000_000}, {"items": 100_000}, issue="#2"),
        Scenario("cpu", "CPU-bound ~1 ms tasks", "s", False,
                 {"tasks": 2000}, {"tasks": 300}, "two bare Processes, static split", issue="#2"),
        Scenario("numpy", "numpy array round trip", "MB/s", True,
                 {"mb": 100, "trips": 1}, {"mb": 20, "trips": 1}, "np.copyto (memcpy)", issue="#4"),
        Scenario("imap_unordered", "imap_unordered, chunksize 1", "items/s", True,
                 {"items": 100_000}, {"items": 10_000}, issue="#4"),
        Scenario("start", "pool start to first result", "ms", False,
                 {}, {}, issue="#4"),
        Scenario("memory", "parent RSS after tiny tasks", "MB", False,
                 {"first": 100_000, "total": 1_000_000, "batch": 10_000},
                 {"first": 10_000, "total": 100_000, "batch": 5_000},
                 peers=("mp", "procpool", "procpool-ex"), repeats=1, issue="#4"),
    ]
}


def _make(peer_name: str) -> Peer:
    peer = PEERS[peer_name]()
    for module in getattr(peer, "modules", ()):
        importlib.import_module(module)
    return peer


def _started(peer: Peer) -> Peer:
    peer.start()
    peer.apply(workloads.noop)  # the workers are up and warm
    return peer


# -- peers


def apply_latency(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    for _ in range(50):
        peer.apply(workloads.noop)
    times = []
    stop = perf() + APPLY_CAP_S
    for i in range(p["calls"]):
        t0 = perf()
        peer.apply(workloads.noop)
        t1 = perf()
        times.append(t1 - t0)
        if t1 > stop and i >= 100:
            break  # a slow peer: enough calls for a median
    times.sort()
    return {"value": statistics.median(times) * 1e6, "p90": times[int(len(times) * 0.9)] * 1e6,
            "calls": len(times)}


def throughput(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    peer.submit_many(workloads.noop, [()] * 200)
    argslist = [()] * p["tasks"]
    t0 = perf()
    results = peer.submit_many(workloads.noop, argslist)
    took = perf() - t0
    assert len(results) == p["tasks"]
    return {"value": p["tasks"] / took}


def map_items(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    peer.map(workloads.inc, list(range(1000)))
    items = list(range(p["items"]))
    t0 = perf()
    out = peer.map(workloads.inc, items)
    took = perf() - t0
    assert len(out) == len(items) and out[-1] == items[-1] + 1
    return {"value": took}


def cpu_bound(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    loops = p["loops"]
    peer.submit_many(workloads.spin, [(loops,)] * 4)
    t0 = perf()
    peer.submit_many(workloads.spin, [(loops,)] * p["tasks"])
    return {"value": perf() - t0}


def numpy_round_trip(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    arr = np.arange(p["mb"] * MB // 8, dtype=np.float64)
    peer.apply(workloads.echo, (arr[:1000],))
    times = []
    for _ in range(p["trips"]):
        t0 = perf()
        out = peer.apply(workloads.echo, (arr,))
        times.append(perf() - t0)
        assert out.shape == arr.shape and out[-1] == arr[-1]
        del out
    return {"value": arr.nbytes / MB / statistics.median(times)}


def imap_unordered(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    for _ in peer.imap_unordered(workloads.inc, list(range(100))):
        pass
    items = list(range(p["items"]))
    t0 = perf()
    total = 0
    count = 0
    for value in peer.imap_unordered(workloads.inc, items):
        total += value
        count += 1
    took = perf() - t0
    assert count == len(items) and total == sum(items) + len(items)
    return {"value": len(items) / took}


def rss_mb() -> float:
    """The resident set of this process (VmRSS in /proc/self/status), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError("no VmRSS in /proc/self/status")


def parent_memory(peer: Peer, p: dict[str, Any]) -> dict[str, Any]:
    batch = [()] * p["batch"]
    start = rss_mb()
    done = 0
    first = 0.0
    t0 = perf()
    while done < p["total"]:
        peer.submit_many(workloads.noop, batch)
        done += len(batch)
        if done == p["first"]:
            first = rss_mb()
    last = rss_mb()
    return {
        "value": last,
        "rss_start": start,
        "rss_first": first,
        "growth_pct": (last - first) / first * 100,
        "first_tasks": p["first"],
        "total_tasks": done,
        "tasks_per_s": done / (perf() - t0),
    }


_MEASURE: dict[str, Callable[[Peer, dict[str, Any]], dict[str, Any]]] = {
    "apply": apply_latency,
    "throughput": throughput,
    "map": map_items,
    "cpu": cpu_bound,
    "numpy": numpy_round_trip,
    "imap_unordered": imap_unordered,
    "memory": parent_memory,
}


def pool_start(peer_name: str) -> dict[str, Any]:
    peer = _make(peer_name)
    t0 = perf()
    peer.start()
    peer.apply(workloads.noop)
    took = perf() - t0
    peer.shutdown()
    return {"value": took * 1e3}


# -- floors


def _floor_apply(p: dict[str, Any]) -> dict[str, Any]:
    workloads.pipe_ping_pong(50)
    times = sorted(workloads.pipe_ping_pong(p["calls"]))
    # For information: the same round trip when both sides poll before sleeping.
    polling = workloads.pipe_ping_pong(p["calls"], poll_for=200e-6)
    return {"value": statistics.median(times) * 1e6, "p90": times[int(len(times) * 0.9)] * 1e6,
            "polling": statistics.median(polling) * 1e6}


def _floor_cpu(p: dict[str, Any]) -> dict[str, Any]:
    t0 = perf()
    workloads.spin_units(p["loops"], p["tasks"])
    serial = perf() - t0
    ceiling = workloads.two_bare_processes(p["loops"], p["tasks"])
    return {"value": ceiling, "serial": serial}


def _floor_numpy(p: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    arr = np.arange(p["mb"] * MB // 8, dtype=np.float64)
    dst = np.empty_like(arr)
    np.copyto(dst, arr)
    times = []
    for _ in range(max(3, p["trips"])):
        t0 = perf()
        np.copyto(dst, arr)
        times.append(perf() - t0)
    return {"value": arr.nbytes / MB / statistics.median(times)}


FLOORS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "apply": _floor_apply,
    "cpu": _floor_cpu,
    "numpy": _floor_numpy,
}


def run_trial(peer_name: str, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    """Measure ``scenario`` once for ``peer_name`` (or ``"floor"``)."""
    if peer_name == "floor":
        return FLOORS[scenario](params)
    if scenario == "start":
        return pool_start(peer_name)
    if scenario == "numpy":
        import numpy  # noqa: F401  (before the pool starts, so forked workers have it)
    peer = _started(_make(peer_name))
    try:
        return _MEASURE[scenario](peer, params)
    finally:
        peer.shutdown()
