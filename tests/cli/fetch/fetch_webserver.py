"""A local web server standing in for several hosts, with faults on demand.

It listens on 127.0.0.1 .. 127.0.0.4 (port 0 each) from an asyncio loop in a thread
that a fixture starts and stops. HTTP/1.1 with keep-alive, GET only. Every request is
logged with its start and end time, and the per-host count of requests in flight is
tracked with its high-water mark, so politeness is checked from the server's side.

Routes (``?lat=MS`` adds latency to any of them; ``server.latency`` to all):
  /size/N                 N bytes of body
  /page/NAME              an HTML page linking to ``server.graph[NAME]``
  /robots.txt             ``server.robots[host]`` (404 if absent; ``server.robots_status``)
  /status/CODE            that status
  /fault/503?n=K&ra=S     the first K requests: 503 with Retry-After S; then 200
  /fault/429?n=K&ra=S     the same with 429
  /fault/500?n=K          the first K: 500
  /fault/reset?n=K        the first K: connection reset mid-body; then 200
  /fault/short            Content-Length 1000, 500 bytes sent, connection closed
  /fault/drip             one byte every 0.2 s, forever
  /fault/hang             no answer at all
  /fault/hold?n=K         the first K: no answer, and ``server.held`` gets the client's
                          port; then 200
  /redirect/loop/a        302 to b, b to a
  /redirect/to?u=URL      302 to URL
  /gzip-bomb              64 MiB of zeros, gzipped (64 KiB on the wire)
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import queue
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class Hit:
    host: str
    path: str
    start: float
    end: float
    status: int
    agent: str


class WebServer:
    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.graph: dict[str, list[str]] = {}
        self.robots: dict[str, str] = {}
        self.robots_status: int | None = None
        self.latency = 0.0
        self.log: list[Hit] = []
        self.active: Counter[str] = Counter()
        self.high_water: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._bomb = b""
        self.held: queue.SimpleQueue[int] = queue.SimpleQueue()  # client ports, /fault/hold
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="test-web-server")

    # -- the fixture's side

    def start(self) -> None:
        self._bomb = gzip.compress(bytes(64 * 2**20), compresslevel=9)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join(10)
        self._loop.close()

    def reset(self) -> None:
        with self._lock:
            self.graph.clear()
            self.robots.clear()
            self.robots_status = None
            self.latency = 0.0
            self.log.clear()
            self.active.clear()
            self.high_water.clear()
            self._counts.clear()

    def url(self, path: str, host: int = 1) -> str:
        address = HOSTS[host - 1]
        return f"http://{address}:{self.ports[address]}{path}"

    def hits(self, path_prefix: str = "") -> list[Hit]:
        with self._lock:
            return [hit for hit in self.log if hit.path.startswith(path_prefix)]

    # -- the loop's side

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._servers = [self._loop.run_until_complete(
            asyncio.start_server(self._connection, host, 0)) for host in HOSTS]  # fmt: skip
        for host, server in zip(HOSTS, self._servers, strict=True):
            self.ports[host] = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        for server in self._servers:
            server.close()
            self._loop.run_until_complete(server.wait_closed())

    def _close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        self._loop.create_task(self._finish())

    async def _finish(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loop.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        host = writer.get_extra_info("sockname")[0]
        try:
            while await self._one_request(host, reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _one_request(self, host: str, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:  # fmt: skip
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        agent = headers.get("User-Agent", headers.get("user-agent", ""))
        start = time.monotonic()
        with self._lock:
            self.active[host] += 1
            self.high_water[host] = max(self.high_water[host], self.active[host])
        status = 0
        try:
            status = await self._respond(host, target, writer)
        finally:
            with self._lock:
                self.active[host] -= 1
                self.log.append(Hit(host, target, start, time.monotonic(), status, agent))
        return status > 0

    def _count(self, host: str, target: str) -> int:
        with self._lock:
            self._counts[host + target] += 1
            return self._counts[host + target]

    async def _respond(self, host: str, target: str, writer: asyncio.StreamWriter) -> int:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        delay = float(query.get("lat", 0)) / 1000 or self.latency
        if delay:
            await asyncio.sleep(delay)
        path = parts.path
        nth = self._count(host, target)
        if path.startswith("/fault/"):
            return await self._fault(path[7:], query, nth, writer)
        if path.startswith("/size/"):
            return await _send(writer, 200, b"x" * int(path[6:]))
        if path.startswith("/page/"):
            return await self._page(path[6:], writer)
        if path == "/robots.txt":
            return await self._robots(host, writer)
        if path.startswith("/status/"):
            return await _send(writer, int(path[8:]), b"status")
        if path.startswith("/redirect/"):
            return await _redirect(path, query, writer)
        if path == "/gzip-bomb":
            return await _send(writer, 200, self._bomb, {"Content-Encoding": "gzip"})
        return await _send(writer, 404, b"no such page")

    async def _fault(self, kind: str, query: dict[str, str], nth: int,
                     writer: asyncio.StreamWriter) -> int:  # fmt: skip
        failing = nth <= int(query.get("n", 1))
        if kind == "hold" and failing:
            self.held.put(writer.get_extra_info("peername")[1])
            await asyncio.Event().wait()
        if kind in ("503", "429") and failing:
            extra = {"Retry-After": query.get("ra", "1")}
            return await _send(writer, int(kind), b"busy", extra)
        if kind == "500" and failing:
            return await _send(writer, 500, b"oops")
        if kind == "reset" and failing:
            await _partial(writer, 1000, 100)
            _reset(writer)
            return -1
        if kind == "short":
            await _partial(writer, 1000, 500)
            return -1
        if kind == "drip":
            await _partial(writer, 1000, 0)
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        if kind == "hang":
            await asyncio.Event().wait()
        return await _send(writer, 200, b"ok")

    async def _page(self, name: str, writer: asyncio.StreamWriter) -> int:
        if name not in self.graph:
            return await _send(writer, 404, b"no such page")
        links = "".join(f'<a href="{href}">{href}</a>\n' for href in self.graph[name])
        body = f"<html><body><h1>{name}</h1>\n{links}</body></html>".encode()
        return await _send(writer, 200, body, {"Content-Type": "text/html; charset=utf-8"})

    async def _robots(self, host: str, writer: asyncio.StreamWriter) -> int:
        if self.robots_status is not None:
            return await _send(writer, self.robots_status, b"robots unavailable")
        if host not in self.robots:
            return await _send(writer, 404, b"no robots.txt")
        return await _send(writer, 200, self.robots[host].encode(), {"Content-Type": "text/plain"})


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes,
                extra: dict[str, str] | None = None) -> int:  # fmt: skip
    headers = {"Content-Type": "application/octet-stream", **(extra or {}),
               "Content-Length": str(len(body))}  # fmt: skip
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return status


async def _partial(writer: asyncio.StreamWriter, length: int, sent: int) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
    writer.write(head + b"x" * sent)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _redirect(path: str, query: dict[str, str], writer: asyncio.StreamWriter) -> int:
    if path == "/redirect/loop/a":
        location = "/redirect/loop/b"
    elif path == "/redirect/loop/b":
        location = "/redirect/loop/a"
    else:
        location = query.get("u", "/")
    return await _send(writer, 302, b"moved", {"Location": location})
