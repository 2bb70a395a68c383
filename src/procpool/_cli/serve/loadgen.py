"""``procpool loadgen HOST:PORT``: a bounded load generator for line servers (asyncio).

Closed loop (default): ``-c`` connections each send ``-n`` lines, one at a time, each
after the previous reply. Open loop (``--rate R``): a line every 1/R s for
``--duration`` s, spread over the connections and pipelined, with latency measured
from the time the line was due, not sent, so a slow server cannot hide its queue
(coordinated omission). ``--connect-per-request``: a new connection for every line.
``--slow-clients S``: S more connections that trickle one byte at a time through the
whole run and never finish a line, to see whether they starve the others. Every run
ends by ``--duration`` (or the requests run out), whatever the server does.
``--processes P`` splits the connections over P processes of a procpool Pool, for
when one event loop is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import procpool
from procpool._cli.serve.command import parse_address

LOADGEN_EPILOG = """\
examples:
  procpool loadgen 127.0.0.1:8081 -c 16 -n 1000          # closed loop, 16,000 lines
  procpool loadgen 127.0.0.1:8081 --rate 5000 --duration 10 -c 8
  procpool loadgen 127.0.0.1:8081 --connect-per-request -c 8 -n 500 --json
  procpool loadgen 127.0.0.1:8081 --slow-clients 20 -c 4 -n 1000

output:
  A table on stdout (or one JSON object with --json): requests, ok, rate, errors by kind
  (refused, reset, timeout, eof, busy, err, mismatch) and latency percentiles.

exit status:
  0 every request answered as expected, 1 some failed, 2 usage error.
"""


@dataclass(frozen=True, slots=True)
class Load:
    host: str
    port: int
    connections: int
    lines: int
    size: int
    rate: float
    duration: float
    per_request: bool
    slow_clients: int
    expect: str
    timeout: float


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    slow_closed: int = 0

    def merge(self, other: Tally) -> None:
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.slow_closed += other.slow_closed


def add_loadgen(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "loadgen", help="load-test a line server (bounded in count and time)",
        description="Send lines to HOST:PORT and measure rate, errors and latency.",
        epilog=LOADGEN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("-c", "--connections", type=int, default=8, metavar="C")
    p.add_argument("-n", "--lines", type=int, default=1000, metavar="K",
                   help="lines per connection (closed loop; default 1000)")
    p.add_argument("--size", type=int, default=16, help="bytes a line, newline aside")
    p.add_argument("--rate", type=float, default=0.0, metavar="R",
                   help="open loop: R lines/s in all for --duration seconds")
    p.add_argument("--duration", type=float, default=30.0, metavar="S",
                   help="stop after S seconds at most (default 30)")
    p.add_argument("--connect-per-request", action="store_true")
    p.add_argument("--slow-clients", type=int, default=0, metavar="S")
    p.add_argument("--expect", choices=("upper", "echo", "any"), default="upper",
                   help="what a right reply is (default upper)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take")
    p.add_argument("--processes", type=int, default=1, metavar="P")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=cmd_loadgen)


def cmd_loadgen(args: argparse.Namespace) -> int:
    from procpool._cli import CommandError

    host, port = parse_address(args.address, "address")
    for name in ("connections", "lines", "size", "processes", "duration"):
        if getattr(args, name) <= 0:
            raise CommandError(f"--{name.replace('_', '-')} must be more than 0")
    if args.processes > args.connections:
        raise CommandError("--processes cannot exceed --connections")
    tally = Tally()
    for part in _split(args, host, port):
        tally.merge(part)
    report = summarize(args, tally)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 1 if sum(tally.errors.values()) else 0


def _split(args: argparse.Namespace, host: str, port: int) -> list[Tally]:
    loads = []
    for i in range(args.processes):
        share = args.connections // args.processes + (i < args.connections % args.processes)
        loads.append(Load(
            host, port, share, args.lines, args.size, args.rate / args.processes,
            args.duration, args.connect_per_request,
            args.slow_clients // args.processes, args.expect, args.timeout,
        ))  # fmt: skip
    if args.processes == 1:
        return [generate(loads[0])]
    with procpool.Pool(args.processes) as pool:
        return pool.map(generate, loads, chunksize=1)


def generate(load: Load) -> Tally:
    """Run one share of the load on a fresh event loop."""
    return asyncio.run(_generate(load))


async def _generate(load: Load) -> Tally:
    tally = Tally()
    payload = bytes(97 + i % 26 for i in range(load.size)) + b"\n"
    want = {"upper": payload.upper(), "echo": payload, "any": b""}[load.expect]
    stop = time.monotonic() + load.duration
    slow = [asyncio.create_task(_slow_client(load, stop, tally)) for _ in range(load.slow_clients)]
    started = time.monotonic()
    if load.rate:
        clients = [_open_loop(load, i, payload, want, started, tally)
                   for i in range(load.connections)]  # fmt: skip
    else:
        run = _per_request if load.per_request else _closed_loop
        clients = [run(load, payload, want, stop, tally) for _ in range(load.connections)]
    await asyncio.gather(*clients)
    tally.elapsed = time.monotonic() - started
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    return tally


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(exc, ConnectionError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def _judge(reply: bytes, want: bytes, tally: Tally, latency: float) -> bool:
    if reply.startswith(b"ERR"):
        tally.errors["busy" if reply.startswith(b"ERR busy") else "err"] += 1
        return False
    if want and reply != want:
        tally.errors["mismatch"] += 1
        return False
    tally.latencies.append(latency)
    return True


async def _connect(load: Load) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(load.host, load.port, limit=1 << 20), load.timeout
    )


async def _closed_loop(
    load: Load, payload: bytes, want: bytes, stop: float, tally: Tally
) -> None:
    try:
        reader, writer = await _connect(load)
    except (OSError, TimeoutError) as exc:
        tally.errors[_kind(exc)] += load.lines
        return
    try:
        for _ in range(load.lines):
            if time.monotonic() >= stop:
                break
            sent = time.perf_counter()
            writer.write(payload)
            reply = await asyncio.wait_for(reader.readuntil(b"\n"), load.timeout)
            if not _judge(reply, want, tally, time.perf_counter() - sent):
                break
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        tally.errors[_kind(exc)] += 1
    finally:
        writer.close()
        await _quiet_close(writer)


async def _per_request(
    load: Load, payload: bytes, want: bytes, stop: float, tally: Tally
) -> None:
    for _ in range(load.lines):
        if time.monotonic() >= stop:
            return
        sent = time.perf_counter()
        writer = None
        try:
            reader, writer = await _connect(load)
            writer.write(payload)
            writer.write_eof()
            reply = await asyncio.wait_for(reader.readuntil(b"\n"), load.timeout)
            _judge(reply, want, tally, time.perf_counter() - sent)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            tally.errors[_kind(exc)] += 1
        finally:
            if writer is not None:
                writer.close()
                await _quiet_close(writer)


async def _open_loop(
    load: Load, index: int, payload: bytes, want: bytes, started: float, tally: Tally
) -> None:
    """Connection ``index`` of C sends line i·C + index at started + (i·C + index)/R."""
    interval = load.connections / load.rate
    count = int(load.rate * load.duration / load.connections)
    try:
        reader, writer = await _connect(load)
    except (OSError, TimeoutError) as exc:
        tally.errors[_kind(exc)] += count
        return
    due: deque[float] = deque()

    async def receive() -> None:
        while due:
            reply = await asyncio.wait_for(reader.readuntil(b"\n"), load.timeout)
            _judge(reply, want, tally, time.monotonic() - due.popleft())

    first = started + index / load.rate
    receiving: asyncio.Task[None] | None = None
    try:
        for i in range(count):
            at = first + i * interval
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            due.append(at)
            writer.write(payload)
            if receiving is None or receiving.done():
                if receiving is not None:
                    receiving.result()
                receiving = asyncio.create_task(receive())
        if receiving is not None:
            await receiving
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        tally.errors[_kind(exc)] += max(1, len(due))
    finally:
        if receiving is not None and not receiving.done():
            receiving.cancel()
        writer.close()
        await _quiet_close(writer)


async def _slow_client(load: Load, stop: float, tally: Tally) -> None:
    try:
        reader, writer = await _connect(load)
    except (OSError, TimeoutError):
        tally.slow_closed += 1
        return
    try:
        while time.monotonic() < stop:
            writer.write(b"s")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1), 0.2)
            except TimeoutError:
                continue
            if not data or data.startswith(b"E"):
                tally.slow_closed += 1
                return
    except OSError:
        tally.slow_closed += 1
    finally:
        writer.close()
        await _quiet_close(writer)


async def _quiet_close(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except OSError:
        pass


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    ordered = sorted(tally.latencies)
    ok = len(ordered)
    mode = "open" if args.rate else "per-request" if args.connect_per_request else "closed"
    return {
        "mode": mode,
        "connections": args.connections,
        "requests": ok + sum(tally.errors.values()),
        "ok": ok,
        "rate": ok / tally.elapsed if tally.elapsed else 0.0,
        "elapsed_s": round(tally.elapsed, 3),
        "errors": dict(sorted(tally.errors.items())),
        "slow_clients": args.slow_clients,
        "slow_clients_closed": tally.slow_closed,
        "latency_ms": {
            name: round(_percentile(ordered, q) * 1000, 3)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
    }


def format_table(report: dict[str, Any]) -> str:
    unit = "connections/s" if report["mode"] == "per-request" else "lines/s"
    lat = report["latency_ms"]
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"
    rows = [
        ("mode", f"{report['mode']}, {report['connections']} connections"),
        ("requests", f"{report['requests']} ({report['ok']} ok) in {report['elapsed_s']} s"),
        ("rate", f"{report['rate']:,.0f} {unit}"),
        ("errors", errors),
        ("latency ms", f"p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}"),
    ]
    if report["slow_clients"]:
        rows.append(("slow clients", f"{report['slow_clients']} ({report['slow_clients_closed']} "
                     "closed by the server)"))  # fmt: skip
    return "\n".join(f"{name:<13}{value}" for name, value in rows)

