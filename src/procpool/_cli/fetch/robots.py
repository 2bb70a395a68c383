"""robots.txt for ``--crawl``: asked once per host before any page, cached, obeyed.

The host's first job queues a robots.txt request in front of it; until the answer
arrives the host's pages wait (``Hosts.take``). 200: its rules apply, and its
Crawl-delay for our user agent widens the host's interval. Another 3xx or 4xx: no rules
(allow all, as RFC 9309 says). A 5xx or a network failure, after the usual retries:
"unreachable", disallow for now: the host's pages are recorded as not fetched, and a
rerun asks again.
"""

from __future__ import annotations

import contextlib

from procpool._cli.fetch.schedule import Hosts, Job, parse_robots
from procpool._cli.fetch.worker import Outcome

DISALLOWED = "disallowed by robots.txt"


class RobotsKeeper:
    def __init__(self, hosts: Hosts, user_agent: str) -> None:
        self._hosts = hosts
        self._agent = user_agent

    def refusal(self, job: Job) -> str | None:
        """Why robots.txt forbids ``job`` now, or None (also while it is being asked)."""
        if job.robots:
            return None
        host = self._hosts.host(job.host)
        if host.robots_state == "unreachable":
            return host.why
        ready = host.robots_state == "ready" and host.rules is not None
        if ready and host.rules is not None and not host.rules.can_fetch(self._agent, job.hop):
            return DISALLOWED
        return None

    def answered(self, job: Job, outcome: Outcome) -> list[Job]:
        """Take in the robots.txt answer; return the host's waiting jobs to requeue."""
        host = self._hosts.host(job.host)
        status = outcome.status
        if status == 200:
            host.rules = parse_robots(outcome.text or "")
            delay = crawl_delay(outcome.text or "", self._agent)
            if delay:
                host.interval = max(host.interval, float(delay))
            host.robots_state = "ready"
        elif status is not None and status < 500:
            host.rules = None
            host.robots_state = "ready"
        else:
            host.robots_state = "unreachable"
            detail = outcome.error or f"status {status}"
            host.why = f"robots.txt unreachable ({detail}): not fetched, disallowed for now"
        return self._hosts.drain(host.key)


def crawl_delay(text: str, agent: str) -> float | None:
    """The Crawl-delay for ``agent`` (fractions too: urllib.robotparser takes integers
    only); a group naming the agent wins over ``*``."""
    token = agent.split("/")[0].lower()
    found: dict[str, float] = {}
    agents: list[str] = []
    in_rules = False
    for raw in text.splitlines():
        field, _, value = raw.split("#")[0].partition(":")
        field, value = field.strip().lower(), value.strip()
        if field == "user-agent":
            if in_rules:
                agents, in_rules = [], False
            agents.append(value.lower())
        elif field:
            in_rules = True
            if field == "crawl-delay":
                with contextlib.suppress(ValueError):
                    for name in agents:
                        found.setdefault(name, float(value))
    mine = next((d for name, d in found.items() if name != "*" and name in token), None)
    return mine if mine is not None else found.get("*")
