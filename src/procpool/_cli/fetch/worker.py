"""The worker side of ``procpool fetch``: a session that keeps requests in flight.

Each worker runs one :func:`session` for the whole run (a streaming procpool task): it
takes ``(id, Request)`` pairs from its own ``procpool.Queue`` the moment the parent
sends them, starts each at once on this process's asyncio loop and ``httpx.AsyncClient``
(kept across sessions, so connections stay alive), and yields each outcome as it
finishes. Nothing waits for a slower neighbour: a slot freed by one response is the
parent's to refill at once. A request's failure is an :class:`Outcome`, never an
exception, and the session never waits to retry (the parent schedules retries).
Redirects are not followed here: a 3xx comes back with its ``location``, and the parent
schedules the next hop under the same per-host limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from procpool._cli.fetch.links import extract_links

_WBITS = {"gzip": 47, "x-gzip": 47, "deflate": 15}  # 47: gzip or zlib header
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_CAP = 512 * 1024  # robots.txt bodies travel back whole, up to this


@dataclass(frozen=True, slots=True)
class Settings:
    """What every request of a run shares (sent once, when a session starts)."""

    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_bytes: int
    user_agent: str
    save_dir: str | None
    connections: int


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    want_links: bool = False
    want_text: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's result; ``retryable`` says whether the parent may try again."""

    status: int | None
    bytes: int = 0
    sha256: str | None = None
    content_type: str | None = None
    elapsed_ms: float = 0.0
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    location: str | None = None
    final_url: str | None = None
    links: tuple[str, ...] = ()
    text: str | None = None


class _State:
    """This process's loop and client, kept across sessions."""

    loop: asyncio.AbstractEventLoop | None = None
    client: Any = None
    settings: Settings | None = None


def _client_for(settings: Settings) -> tuple[asyncio.AbstractEventLoop, Any]:
    if _State.loop is None:
        _State.loop = asyncio.new_event_loop()
    if _State.settings != settings:
        if _State.client is not None:
            _State.loop.run_until_complete(_State.client.aclose())
        _State.client = _make_client(settings)
        _State.settings = settings
    return _State.loop, _State.client


def session(settings: Settings, requests: Any) -> Iterator[list[tuple[int, Outcome]]]:
    """Fetch what arrives on ``requests`` (lists of ``(id, Request)``) until ``None``.

    Yields lists of ``(id, Outcome)``, the requests finished since the last yield; the
    first list is empty and means "ready" (httpx imported, the client made), so the
    parent sends nothing to a worker still starting. After ``None`` (or once the
    queue is closed) the session ends when its requests are done."""
    loop, client = _client_for(settings)
    with contextlib.suppress(ImportError):  # httpcore imports these on its first request
        import anyio._backends._asyncio  # noqa: F401
        import httpcore._backends.anyio  # noqa: F401
    yield []
    runner = _Session(loop, client, settings)
    threading.Thread(target=runner.read, args=(requests,), daemon=True,
                     name="procpool-fetch-requests").start()  # fmt: skip
    try:
        while (finished := loop.run_until_complete(runner.next_finished())) is not None:
            yield finished
    finally:
        runner.close()


class _Session:
    """One session's requests in flight. Everything but :meth:`read` runs in the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, settings: Settings):
        self._loop = loop
        self._client = client
        self._settings = settings
        self._finished: list[tuple[int, Outcome]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # the requests in flight
        self._open = True
        self._closed = False
        self._wake = asyncio.Event()

    def read(self, requests: Any) -> None:
        """The reader thread: hand each arriving list to the loop; end on None."""
        while True:
            try:
                item = requests.get()
            except (ValueError, OSError):  # the queue was closed, or its owner is gone
                item = None
            self._loop.call_soon_threadsafe(self._start, item)
            if item is None:
                return

    def _start(self, item: list[tuple[int, Request]] | None) -> None:
        if self._closed:
            return
        if item is None:
            self._open = False
            self._wake.set()
            return
        for ident, request in item:
            self._tasks.add(self._loop.create_task(self._one(ident, request)))

    async def _one(self, ident: int, request: Request) -> None:
        outcome = await _guarded(self._client, request, self._settings)
        self._tasks.discard(asyncio.current_task())
        self._finished.append((ident, outcome))
        self._wake.set()

    async def next_finished(self) -> list[tuple[int, Outcome]] | None:
        """The outcomes finished since the last call (waiting for one); None at the end."""
        while not self._finished:
            if not self._open and not self._tasks:
                return None
            self._wake.clear()
            await self._wake.wait()
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        """The session was ended early: cancel what is still in flight."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))


def _make_client(settings: Settings) -> Any:
    import httpx

    timeout = httpx.Timeout(
        settings.read_timeout, connect=settings.connect_timeout, pool=settings.total_timeout
    )
    limits = httpx.Limits(
        max_connections=settings.connections, max_keepalive_connections=settings.connections
    )
    return httpx.AsyncClient(
        timeout=timeout, limits=limits, follow_redirects=False,
        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "gzip, deflate"},
        trust_env=False,
    )  # fmt: skip


async def _guarded(client: Any, request: Request, settings: Settings) -> Outcome:
    started = time.monotonic()
    try:
        async with asyncio.timeout(settings.total_timeout):
            return await _fetch(client, request, settings, started)
    except TimeoutError:
        error = f"Timeout: no complete response within {settings.total_timeout:g} s"
        return Outcome(None, elapsed_ms=_ms(started), error=error, retryable=True)
    except Exception as exc:
        return _failure(exc, started)


def _failure(exc: Exception, started: float) -> Outcome:
    import httpx

    retryable = isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError
    )
    text = str(exc) or repr(exc)
    error = f"{type(exc).__name__}: {text}"
    return Outcome(None, elapsed_ms=_ms(started), error=error, retryable=retryable)


async def _fetch(client: Any, request: Request, settings: Settings, started: float) -> Outcome:
    async with client.stream("GET", request.url) as response:
        body, truncated = await _read_capped(response, settings.max_bytes)
    status: int = response.status_code
    content_type = response.headers.get("content-type")
    digest = hashlib.sha256(body).hexdigest()
    if settings.save_dir is not None and status == 200:
        _save(settings.save_dir, digest, body)
    links: tuple[str, ...] = ()
    final_url = str(response.url)
    if request.want_links and status == 200 and _is_html(content_type):
        page = body.decode(response.encoding or "utf-8", "replace")
        links = tuple(extract_links(page, final_url))
    text = body[:_TEXT_CAP].decode("utf-8", "replace") if request.want_text else None
    return Outcome(
        status, len(body), digest, content_type, _ms(started),
        error=f"truncated at --max-bytes {settings.max_bytes}" if truncated else None,
        retryable=False, retry_after=_retry_after(response.headers.get("retry-after")),
        location=response.headers.get("location") if status in REDIRECTS else None,
        final_url=final_url, links=links, text=text,
    )  # fmt: skip


async def _read_capped(response: Any, cap: int) -> tuple[bytes, bool]:
    """The decompressed body, at most ``cap`` bytes; True if cut there.

    Decompressed here, never more than ``cap + 1`` bytes at a time: httpx's decoder
    inflates a whole network chunk at once (64 KiB of gzipped zeros is 64 MiB)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    inflate = zlib.decompressobj(wbits=_WBITS[encoding]) if encoding in _WBITS else None
    body = bytearray()
    async for chunk in response.aiter_raw():
        pending = chunk
        while pending:
            if inflate is None:
                data, pending = pending, b""
            else:
                data = inflate.decompress(pending, cap - len(body) + 1)
                pending = inflate.unconsumed_tail
            body += data
            if len(body) > cap:
                return bytes(body[:cap]), True
    return bytes(body), False


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_html(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() in (
        "text/html", "application/xhtml+xml",
    )  # fmt: skip


def _save(directory: str, digest: str, body: bytes) -> None:
    """Content-addressed: DIR/ab/abcdef...; written to a temporary name, then renamed."""
    folder = os.path.join(directory, digest[:2])
    path = os.path.join(folder, digest)
    if os.path.exists(path):
        return
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(body)
    os.replace(temporary, path)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)
