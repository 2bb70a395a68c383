"""The parent's scheduling tables: jobs waiting per host, politeness, retry timers.

:class:`Hosts` owns the per-host state: the jobs waiting for that host, how many of its
requests are in flight (``--per-host``), when the next may start (``--rate`` and
robots.txt's Crawl-delay) and its robots.txt rules. :class:`Retries` is a heap of jobs
waiting out their backoff: the wait happens here, in the parent, never in a worker.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.robotparser import RobotFileParser

from procpool._cli.fetch.links import host_key, robots_url

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class Job:
    """One URL on its way to one record (``index`` orders the records), or a robots.txt."""

    index: int
    url: str
    depth: int = 0
    hop: str = ""
    attempts: int = 0  # requests made for this URL, every hop
    tries: int = 0  # requests made for this hop (what --retries limits)
    chain: tuple[str, ...] = ()
    robots: bool = False

    def __post_init__(self) -> None:
        self.hop = self.hop or self.url
        self.chain = self.chain or (self.hop,)

    @property
    def host(self) -> str:
        return host_key(self.hop)


@dataclass(slots=True)
class Host:
    key: str
    waiting: deque[Job] = field(default_factory=deque)
    active: int = 0
    next_at: float = 0.0
    interval: float = 0.0
    # robots: "off" (not checked), "none" (not asked yet), "pending", "ready", "unreachable"
    robots_state: str = "off"
    rules: RobotFileParser | None = None
    why: str = ""  # why nothing is fetched from an "unreachable" host


class Hosts:
    """Per-host queues and limits; ``take`` hands out the jobs allowed to start now."""

    def __init__(self, per_host: int, rate: float | None, robots: bool) -> None:
        self._per_host = per_host
        self._interval = 1.0 / rate if rate else 0.0
        self._robots = robots
        self._hosts: dict[str, Host] = {}
        self._turn: deque[Host] = deque()  # hosts with waiting jobs, round robin
        self.waiting = 0

    def host(self, key: str) -> Host:
        found = self._hosts.get(key)
        if found is None:
            found = Host(key, interval=self._interval)
            found.robots_state = "none" if self._robots else "off"
            self._hosts[key] = found
        return found

    def add(self, job: Job, front: bool = False) -> None:
        """Queue ``job`` for its host (asking for robots.txt first when needed)."""
        host = self.host(job.host)
        if host.robots_state == "none" and not job.robots:
            host.robots_state = "pending"
            self.add(Job(-1, robots_url(job.hop), robots=True))
        if not host.waiting:
            self._turn.append(host)
        if front:
            host.waiting.appendleft(job)
        else:
            host.waiting.append(job)
        self.waiting += 1

    def take(self, now: float, room: int) -> tuple[list[Job], float | None]:
        """Up to ``room`` jobs that may start now, and when another might (else None)."""
        taken: list[Job] = []
        wake: float | None = None
        for _ in range(len(self._turn)):
            if len(taken) >= room:
                break
            host = self._turn.popleft()
            blocked_until = self._take_from(host, now, room - len(taken), taken)
            if blocked_until is not None:
                wake = blocked_until if wake is None else min(wake, blocked_until)
            if host.waiting:
                self._turn.append(host)
        return taken, wake

    def _take_from(self, host: Host, now: float, room: int, taken: list[Job]) -> float | None:
        while host.waiting and room > 0 and host.active < self._per_host:
            if host.robots_state == "pending" and not host.waiting[0].robots:
                return None  # robots.txt first: its answer releases the host
            if host.next_at > now:
                return host.next_at
            taken.append(host.waiting.popleft())
            self.waiting -= 1
            host.active += 1
            host.next_at = now + host.interval if host.interval else 0.0
            room -= 1
        return None

    def finished(self, job: Job) -> None:
        self._hosts[job.host].active -= 1

    def drain(self, key: str) -> list[Job]:
        """Remove and return every job waiting for host ``key``."""
        host = self._hosts[key]
        jobs = list(host.waiting)
        host.waiting.clear()
        self.waiting -= len(jobs)
        return jobs

    def hosts(self) -> Iterator[Host]:
        return iter(self._hosts.values())


def parse_robots(text: str) -> RobotFileParser:
    rules = RobotFileParser()
    rules.parse(text.splitlines())
    return rules


class Retries:
    """Jobs waiting out a backoff, by due time (exponential, full jitter, Retry-After)."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempts-1))]; or Retry-After,
        capped at ``cap``."""
        if retry_after is not None:
            return min(self._cap, retry_after)
        return self._rng.uniform(0, min(self._cap, self._base * 2 ** (attempts - 1)))

    def push(self, job: Job, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job))

    def due(self, now: float) -> list[Job]:
        jobs = []
        while self._heap and self._heap[0][0] <= now:
            jobs.append(heapq.heappop(self._heap)[2])
        return jobs

    def nearest(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> list[Job]:
        jobs = [entry[2] for entry in self._heap]
        self._heap.clear()
        return jobs
