"""The parent's loop: admit URLs, hand requests to workers, settle each outcome.

::

  URLS_FILE ─reader thread─▶ lines (bounded) ─admit─▶ dedup ─▶ Hosts (per-host queues,
  --crawl seeds ──────────────────────────────┘   ▲              robots.txt, --per-host,
                                                  │ links        --rate, Crawl-delay)
                                                  │                   │ take (≤ --per-worker)
                                                                      │ a Queue per session
  Outputs ◀─ record ◀─ settle ◀─ inbox ◀─ pump threads ◀─ Pool: one session per worker
  (jsonl/text, sqlite)   │  retry? ─▶ Retries (heap of due times) ─▶ Hosts
                         └ redirect? ─▶ next hop ─▶ Hosts

Each worker runs a session for the whole run: the parent sends a request to a session
the moment its host's limits allow it, and each outcome comes back the moment it
finishes (:mod:`~procpool._cli.fetch.sessions`). Only the main thread touches these
tables; the sessions' pump threads and the input reader post to the :class:`Inbox`,
the one wait of the loop, whose deadline is the nearest timer (a retry, a host's next
slot under --rate, the next commit).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from procpool import Pool, WorkerLostError
from procpool._cli.fetch.links import check_url, host_key
from procpool._cli.fetch.output import COMMIT_EVERY, Outputs, Record
from procpool._cli.fetch.report import Progress, Stats
from procpool._cli.fetch.robots import RobotsKeeper
from procpool._cli.fetch.schedule import RETRY_STATUSES, Hosts, Job, Retries
from procpool._cli.fetch.sessions import Session, Sessions
from procpool._cli.fetch.source import END, Source
from procpool._cli.fetch.worker import Outcome, Request, Settings
from procpool._cli.inbox import Inbox


@dataclass(frozen=True, slots=True)
class Plan:
    """How to fetch: the scheduler's limits (the workers' part is ``settings``)."""

    settings: Settings
    jobs: int = 2
    per_worker: int = 8
    per_host: int = 2
    rate: float | None = None
    max_inflight: int = 16
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_redirects: int = 10
    seeds: tuple[str, ...] = ()
    depth: int = 0
    same_host: bool = False
    max_pages: int | None = None
    robots: bool = False
    grace: float = 10.0


def _key(url: str) -> int:
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big")


class Crawler:
    """One run of ``procpool fetch``; ``run()`` returns finished, interrupted or stopped."""

    def __init__(self, plan: Plan, outputs: Outputs, source: Source | None, progress: Progress):
        self.plan = plan
        self.outputs = outputs
        self.source = source
        self.progress = progress
        self.inbox = Inbox()
        self.hosts = Hosts(plan.per_host, plan.rate, plan.robots)
        self.retries = Retries(plan.backoff, plan.max_retry_after)
        self.robots = RobotsKeeper(self.hosts, plan.settings.user_agent)
        self.stats = Stats()
        self._seen: set[int] = set()
        self._done: set[int] = set()
        self._stored_links: dict[str, str] = {}
        self._seed_hosts = {host_key(seed) for seed in plan.seeds}
        self.sessions: Sessions | None = None
        self._index = itertools.count()
        self._admitted = 0
        self._input_done = source is None
        self.stop_reason: str | None = None
        self._grace_until = 0.0

    @property
    def inflight(self) -> int:
        """Requests sent to the workers and not yet settled."""
        return self.sessions.held if self.sessions is not None else 0

    def input_pending(self) -> None:
        """A source was attached after construction: wait for its end."""
        self._input_done = self.source is None

    # -- resume

    def resume_from(self, rows: Any) -> None:
        """Rows stored by earlier runs: skipped, their links re-followed in a crawl."""
        for url, _depth, links in rows:
            self._done.add(_key(url))
            if links and self.plan.depth:
                self._stored_links[url] = links

    # -- the loop

    def run(self) -> str:
        how = "stopped"
        with self.inbox.catching_signals():
            pool = Pool(self.plan.jobs)
            try:
                # Requests go only to sessions that said they are ready (httpx imported,
                # client made): a cold start would delay the first requests and bunch
                # them at the server, under --rate too.
                self.sessions = Sessions(pool, self.plan.settings, self.plan.jobs,
                                         self.plan.per_worker, self.inbox.post)  # fmt: skip
                if self.source is not None:
                    self.source.start()
                for seed in self.plan.seeds:
                    self._admit(seed, 0)
                how = self._loop()
            finally:
                self._shutdown(pool, how)
        return how

    def _loop(self) -> str:
        next_commit = time.monotonic() + COMMIT_EVERY
        while True:
            now = time.monotonic()
            self._check_stop(now)
            if self.stop_reason is None:
                self._admit_input()
                for job in self.retries.due(now):
                    self._enqueue(job)
            wake = self._dispatch(now) if self.stop_reason is None else None
            if self._finished(now):
                return "finished" if self.stop_reason is None else "interrupted"
            if now >= next_commit:
                self.outputs.flush()
                next_commit = now + COMMIT_EVERY
            deadlines = [d for d in (wake, self.retries.nearest(), next_commit) if d is not None]
            self.inbox.wait(max(0.0, min(deadlines) - time.monotonic()))
            for event in self.inbox.take():
                self._on_event(event)
            self.progress.update(self.stats, self.inflight, self.hosts.waiting, now)

    def _check_stop(self, now: float) -> None:
        if self.stop_reason is not None:
            return
        if self.inbox.signal:
            self._stop("interrupted", now)
        elif self.outputs.errors:
            self._stop(self.outputs.errors[0], now)
        elif self.source is not None and self.source.error:
            self._stop(self.source.error, now)

    def _stop(self, reason: str, now: float) -> None:
        """Schedule nothing more; in-flight batches get until the grace deadline."""
        self.stop_reason = reason
        self._grace_until = now + self.plan.grace
        for job in self.retries.clear():
            self._drop(job)
        for host in list(self.hosts.hosts()):
            for job in self.hosts.drain(host.key):
                self._drop(job)

    def _finished(self, now: float) -> bool:
        if self.stop_reason is not None:
            return not self.inflight or now >= self._grace_until
        return (self._input_done and not self.hosts.waiting and not self.retries
                and not self.inflight)  # fmt: skip

    def _shutdown(self, pool: Pool, how: str) -> None:
        if how == "finished" and self.sessions is not None:
            self.sessions.finish()
            pool.close()
        else:
            pool.terminate()
        pool.join()
        if self.sessions is not None:
            self.sessions.close()
        if self.source is not None:
            self.source.stop()
        self.progress.clear()
        self.outputs.close()

    # -- admitting URLs

    def _admit_input(self) -> None:
        if self._input_done or self.source is None:
            return
        room = max(1024, 4 * self.plan.max_inflight) - self.hosts.waiting
        for _ in range(room):
            try:
                line = self.source.lines.get_nowait()
            except Exception:
                return
            if line is END:
                self._input_done = True
                return
            self._admit(line, 0)

    def _admit(self, url: str, depth: int) -> None:
        """A URL from the input or a page: deduplicated, then recorded or queued."""
        key = _key(url)
        if key in self._seen:
            self.stats.duplicates += 1
            return
        if self.plan.max_pages is not None and self._admitted >= self.plan.max_pages:
            return
        self._seen.add(key)
        self._admitted += 1
        if key in self._done:
            self.stats.skipped += 1
            self._follow_links(url, depth, self._stored_links.pop(url, None))
            return
        job = Job(next(self._index), url, depth)
        problem = check_url(url)
        if problem is not None:
            self._emit(job, Outcome(None, error=problem))
        else:
            self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        refusal = self.robots.refusal(job)
        if refusal is not None:
            self._emit(job, Outcome(None, error=refusal))
        else:
            self.hosts.add(job, front=job.robots)

    def _follow_links(self, url: str, depth: int, links: str | None) -> None:
        if not links or depth >= self.plan.depth:
            return
        for link in json.loads(links):
            if not self.plan.same_host or host_key(link) in self._seed_hosts:
                self._admit(link, depth + 1)

    # -- requests

    def _dispatch(self, now: float) -> float | None:
        """Send sessions with room every job its host lets start now; when to look again."""
        assert self.sessions is not None
        wake = None
        for s, room in self.sessions.room():
            room = min(room, self.plan.max_inflight - self.inflight)
            if room <= 0:
                break
            jobs, blocked_until = self.hosts.take(now, room)
            if blocked_until is not None:
                wake = blocked_until if wake is None else min(wake, blocked_until)
            if not jobs:
                break
            self._submit(s, jobs)
        return wake

    def _submit(self, s: Session, jobs: list[Job]) -> None:
        assert self.sessions is not None
        links = self.plan.depth > 0
        requests = [
            Request(job.hop, want_links=links and job.depth < self.plan.depth and not job.robots,
                    want_text=job.robots)
            for job in jobs
        ]  # fmt: skip
        for job in jobs:
            job.attempts += 1
            job.tries += 1
        self.sessions.send(s, jobs, requests)

    def _on_event(self, event: Any) -> None:
        if event is None:  # the input reader woke us: lines are waiting
            return
        assert self.sessions is not None
        kind, s, value = event
        if kind == "values":
            settled = self.sessions.values(s, value)
        elif kind == "ended":
            self.sessions.ended(s)
            return
        else:
            settled = self._lost(s, value)
        for job, outcome in settled:
            self.hosts.finished(job)
            self._settle(job, outcome)

    def _lost(self, s: Session, error: BaseException) -> list[tuple[Job, Outcome]]:
        """A session ended in an error: its requests fail (a killed worker's may be
        retried) and a new session takes its place; any other error stops the run."""
        assert self.sessions is not None
        jobs = self.sessions.lost(s)
        worker_lost = isinstance(error, WorkerLostError)
        text = f"{type(error).__name__}: {error}"
        if worker_lost and self.stop_reason is None:
            try:
                self.sessions.open()
            except Exception as exc:  # the pool broke (its workers cannot start)
                self._stop(f"cannot start a fetch worker: {exc}", time.monotonic())
        elif not worker_lost:
            self._stop(f"a fetch worker failed: {text}", time.monotonic())
        return [(job, Outcome(None, error=text, retryable=worker_lost)) for job in jobs]

    # -- outcomes

    def _settle(self, job: Job, outcome: Outcome) -> None:
        if self._retry(job, outcome):
            return
        if job.robots:
            for waiting in self.robots.answered(job, outcome):
                self._enqueue(waiting)
            return
        if outcome.location is not None and self._redirect(job, outcome):
            return
        self._emit(job, outcome)
        if outcome.links:
            self._follow_links(job.url, job.depth, json.dumps(outcome.links))

    def _retry(self, job: Job, outcome: Outcome) -> bool:
        if not (outcome.retryable or outcome.status in RETRY_STATUSES):
            return False
        if job.tries > self.plan.retries:
            return False
        if self.stop_reason is not None:
            self._drop(job)
            return True
        now = time.monotonic()
        delay = self.retries.delay(job.tries, outcome.retry_after)
        if outcome.retry_after is not None:  # the server asked the whole host to wait
            host = self.hosts.host(job.host)
            host.next_at = max(host.next_at, now + delay)
        self.retries.push(job, now + delay)
        return True

    def _redirect(self, job: Job, outcome: Outcome) -> bool:
        """Queue the next hop; False (the 3xx is recorded, with why) if it cannot go."""
        from urllib.parse import urldefrag, urljoin

        target = urldefrag(urljoin(job.hop, outcome.location or ""))[0]
        problem = check_url(target)
        if problem is None and target in job.chain:
            problem = "redirect loop: " + " -> ".join((*job.chain, target))
        elif problem is None and len(job.chain) > self.plan.max_redirects:
            problem = f"more than --max-redirects {self.plan.max_redirects} redirects"
        if problem is not None:
            self._emit(job, Outcome(outcome.status, outcome.bytes, outcome.sha256,
                                    outcome.content_type, outcome.elapsed_ms,
                                    error=f"redirect to {target}: {problem}",
                                    final_url=job.hop))  # fmt: skip
            return True
        hop = Job(job.index, job.url, job.depth, hop=target, attempts=job.attempts,
                  chain=(*job.chain, target))  # fmt: skip
        self._enqueue(hop)
        return True

    def _drop(self, job: Job) -> None:
        """Not recorded (stopping): the next run fetches it."""
        if not job.robots:
            self.outputs.skip(job.index)

    def _emit(self, job: Job, outcome: Outcome) -> None:
        record = Record(
            job.url, outcome.final_url or job.hop, outcome.status, outcome.bytes,
            outcome.sha256, outcome.content_type, outcome.elapsed_ms, job.attempts,
            outcome.error, datetime.now(UTC).isoformat(timespec="milliseconds"),
        )  # fmt: skip
        self.stats.add(record)
        links = json.dumps(outcome.links) if outcome.links else None
        self.outputs.emit(job.index, record, job.depth, links)
