"""The parent's side of the workers' sessions: who holds which request.

One :func:`~procpool._cli.fetch.worker.session` per worker, each a streaming task
(``pool.imap_stream``) fed by its own ``procpool.Queue``. A pump thread per session
turns what the session yields into events on the crawler's :class:`Inbox`; only the
main thread touches the tables here. A session that dies (its worker killed) gives back
every request it held, as lost, and a new session takes its place.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from procpool import Pool, Queue
from procpool._cli.fetch.schedule import Job
from procpool._cli.fetch.worker import Request, Settings, session

Post = Callable[[object], None]


@dataclass(eq=False)
class Session:
    queue: Queue
    ready: bool = False
    held: dict[int, Job] = field(default_factory=dict)  # request id -> job


class Sessions:
    """``jobs`` sessions with at most ``per_worker`` requests each."""

    def __init__(self, pool: Pool, settings: Settings, jobs: int, per_worker: int,
                 post: Post) -> None:  # fmt: skip
        self._pool = pool
        self._settings = settings
        self._per_worker = per_worker
        self._post = post
        self._ids = itertools.count()
        self._live: list[Session] = []  # sessions not yet ended
        self._threads: list[threading.Thread] = []  # every session's pump
        for _ in range(jobs):
            self.open()

    def open(self) -> None:
        """Start one more session (a replacement for one that died)."""
        s = Session(Queue())
        stream = self._pool.imap_stream(functools.partial(session, self._settings), [s.queue])
        thread = threading.Thread(target=self._pump, args=(s, stream), daemon=True,
                                  name="procpool-fetch-session")  # fmt: skip
        self._live.append(s)
        self._threads.append(thread)
        thread.start()

    def _pump(self, s: Session, stream: Any) -> None:
        try:
            for finished in stream:
                self._post(("values", s, finished))
        except BaseException as exc:  # every way a session ends is news to the parent
            self._post(("lost", s, exc))
        else:
            self._post(("ended", s, None))

    # -- the main thread

    @property
    def held(self) -> int:
        """Requests the sessions hold: sent, and not yet come back."""
        return sum(len(s.held) for s in self._live)

    def room(self) -> list[tuple[Session, int]]:
        """The ready sessions with room, the emptiest first, and how much room each."""
        free = [(s, self._per_worker - len(s.held)) for s in self._live if s.ready]
        return sorted((pair for pair in free if pair[1] > 0), key=lambda pair: -pair[1])

    def send(self, s: Session, jobs: list[Job], requests: list[Request]) -> None:
        batch = []
        for job, request in zip(jobs, requests, strict=True):
            ident = next(self._ids)
            s.held[ident] = job
            batch.append((ident, request))
        s.queue.put(batch)

    def values(self, s: Session, finished: list[tuple[int, Any]]) -> list[tuple[Job, Any]]:
        """What a session yielded: (job, outcome) pairs (the first, empty, means ready)."""
        s.ready = True
        return [(s.held.pop(ident), outcome) for ident, outcome in finished]

    def lost(self, s: Session) -> list[Job]:
        """A session ended with an error: the jobs it held, and it is gone."""
        self._retire(s)
        jobs = list(s.held.values())
        s.held.clear()
        return jobs

    def ended(self, s: Session) -> None:
        self._retire(s)

    def _retire(self, s: Session) -> None:
        self._live.remove(s)
        s.queue.close()

    def finish(self) -> None:
        """No more requests: each session ends once its own are done."""
        for s in self._live:
            s.queue.put(None)

    def close(self) -> None:
        """After the pool is joined or terminated: every pump thread and queue ended."""
        for thread in self._threads:
            thread.join()
        for s in self._live:
            s.queue.close()
