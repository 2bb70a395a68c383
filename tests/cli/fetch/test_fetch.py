"""``procpool fetch`` end to end against the local web server (tests/cli/fetch/webserver.py).

The command runs as a subprocess; politeness is checked in the server's log. Tests
that act midway synchronize on the command's progress lines, never on sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_helpers import by_url, fetch, owner_of_connection, records
from fetch_webserver import WebServer


def test_list_gets_one_record_per_url(server: WebServer, tmp_path: Path) -> None:
    urls = [server.url("/size/1000"), server.url("/size/20", 2), server.url("/status/404")]
    text = "\n".join(["# a comment", urls[0], "", urls[1], urls[0], urls[2], "ftp://x/f"])
    done = fetch("-", cwd=tmp_path, stdin=text)
    assert done.returncode == 1, done.stderr  # the 404 and the ftp line failed
    found = by_url(done.stdout)
    assert set(found) == {*urls, "ftp://x/f"}
    assert found[urls[0]]["bytes"] == 1000
    assert found[urls[0]]["sha256"] == hashlib.sha256(b"x" * 1000).hexdigest()
    assert found[urls[0]]["status"] == 200 and found[urls[0]]["attempts"] == 1
    assert found[urls[2]]["status"] == 404 and found[urls[2]]["attempts"] == 1
    assert "unsupported scheme 'ftp'" in found["ftp://x/f"]["error"]
    assert len(server.hits("/size/1000")) == 1  # the duplicate line was not fetched
    assert "1 duplicate" in done.stderr and "p95" in done.stderr


def test_text_format_and_saved_bodies(server: WebServer, tmp_path: Path) -> None:
    urls = [server.url(f"/size/{n}") for n in (5, 70)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    done = fetch("urls.txt", "--format", "text", "--save-bodies", "bodies", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"url:{u} size:{n}" for u, n in
                                                      zip(urls, (5, 70), strict=True))  # fmt: skip
    for n in (5, 70):
        digest = hashlib.sha256(b"x" * n).hexdigest()
        assert (tmp_path / "bodies" / digest[:2] / digest).read_bytes() == b"x" * n


FAULTS = {
    "/fault/503?n=2&ra=0": (200, 3, None),
    "/fault/429?n=1&ra=0": (200, 2, None),
    "/fault/500?n=1": (200, 2, None),
    "/fault/reset?n=1": (200, 2, None),
    "/fault/short": (None, 3, "RemoteProtocolError"),
    "/fault/drip": (None, 3, "Timeout"),
    "/fault/hang": (None, 3, "Timeout"),
    "/redirect/loop/a": (302, 2, "redirect loop"),
    "/gzip-bomb": (200, 1, "truncated"),
    "/status/403": (403, 1, None),
    "/size/10": (200, 1, None),
}


def test_every_fault_ends_in_exactly_one_record(server: WebServer, tmp_path: Path) -> None:
    urls = {server.url(path, host=1 + i % 4): path for i, path in enumerate(FAULTS)}
    done = fetch("-", "--retries", "2", "--backoff", "0.01", "--timeout", "0.6",
                 "--read-timeout", "5", "--max-bytes", "1M", "--db", "r.sqlite", "--out", "-",
                 cwd=tmp_path, stdin="\n".join(urls))  # fmt: skip
    assert done.returncode == 1, done.stderr
    found = by_url(done.stdout)
    assert set(found) == set(urls)
    for url, path in urls.items():
        status, attempts, error = FAULTS[path]
        got = found[url]
        hits = [(h.status, round(h.end - h.start, 3)) for h in server.hits(path)]
        assert (got["status"], got["attempts"]) == (status, attempts), (path, got, hits)
        assert (got["error"] is None) if error is None else (error in got["error"]), (path, got)
    bomb = next(r for u, r in found.items() if urls[u] == "/gzip-bomb")
    assert bomb["bytes"] == 2**20
    assert len(server.hits("/status/403")) == 1  # a 4xx is final
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as db:
        assert db.execute("SELECT count(*), count(DISTINCT url) FROM results").fetchone() == (
            len(urls),
            len(urls),
        )


def test_retry_after_is_waited_out_in_the_parent(server: WebServer, tmp_path: Path) -> None:
    slow, other = server.url("/fault/503?n=1&ra=1"), server.url("/size/3", 2)
    done = fetch("-", "-j", "1", "--per-worker", "2", cwd=tmp_path, stdin=f"{slow}\n{other}")
    assert done.returncode == 0, done.stderr
    first, second = server.hits("/fault/503")
    assert second.start - first.end >= 0.95  # Retry-After: 1
    assert server.hits("/size/3")[0].end < second.start  # the slot served others meanwhile


def test_per_host_limit_holds_at_the_server(server: WebServer, tmp_path: Path) -> None:
    urls = [server.url(f"/size/{100 + i}?lat=40", host=1 + i % 4) for i in range(48)]
    done = fetch("-", "-j", "2", "--per-worker", "8", "--per-host", "2", cwd=tmp_path,
                 stdin="\n".join(urls))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(records(done.stdout)) == 48
    assert dict(server.high_water) == {host: 2 for host in server.ports}


def test_rate_spaces_requests_per_host(server: WebServer, tmp_path: Path) -> None:
    urls = [server.url(f"/size/{i}") for i in range(1, 7)]
    args = ["-", "-j", "1", "--rate", "5", "--per-host", "4"]
    done = fetch(*args, cwd=tmp_path, stdin="\n".join(urls))
    assert done.returncode == 0, done.stderr
    starts = sorted(hit.start for hit in server.hits("/size/"))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # The parent spaces the starts 0.2 s apart; the server sees them with some jitter.
    assert len(starts) == 6 and min(gaps) >= 0.15 and sum(gaps) >= 0.95, gaps


def _graph(server: WebServer) -> None:
    other = server.url("/page/elsewhere", host=2)
    server.graph.update({
        "home": ["/page/a", "/page/b", "/page/secret", other, "mailto:x@y"],
        "a": ["/page/c", "/page/home", "#top"],
        "b": ["/page/a", "/page/d"],
        "c": ["/page/deep"],
        "d": [], "secret": ["/page/hidden"], "deep": [], "elsewhere": [],
    })  # fmt: skip
    server.robots[server.url("/")[7:].split(":")[0]] = "User-agent: *\nDisallow: /page/secret\n"


def _bfs(graph: dict[str, list[str]], seed: str, depth: int, banned: set[str]) -> set[str]:
    level, seen = {seed}, {seed}
    for _ in range(depth):
        level = {link[6:] for page in level if page not in banned for link in graph[page]
                 if link.startswith("/page/")} - seen  # fmt: skip
        seen |= level
    return seen


def test_crawl_visits_the_expected_set_and_obeys_robots(server: WebServer, tmp_path: Path) -> None:
    _graph(server)
    seed = server.url("/page/home")
    done = fetch("--crawl", seed, "--depth", "2", "--same-host", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = _bfs(server.graph, "home", 2, banned={"secret"})
    fetched = {hit.path[6:] for hit in server.hits("/page/")}
    assert fetched == expected - {"secret"}
    assert {hit.host for hit in server.hits("/robots.txt")} == {"127.0.0.1"}
    assert len(server.hits("/robots.txt")) == 1
    assert all(hit.agent.startswith("procpool/") for hit in server.log)
    found = by_url(done.stdout)
    assert {u.rsplit("/", 1)[1] for u in found} == expected
    assert found[server.url("/page/secret")]["error"] == "disallowed by robots.txt"


def test_crawl_delay_and_max_pages(server: WebServer, tmp_path: Path) -> None:
    _graph(server)
    server.robots["127.0.0.1"] = (
        "User-agent: other\nCrawl-delay: 9\n\nUser-agent: *\nCrawl-delay: 0.2\n"
    )
    done = fetch("--crawl", server.url("/page/home"), "--depth", "3", "--same-host",
                 "--max-pages", "4", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(records(done.stdout)) == 4
    starts = sorted(hit.start for hit in server.log)
    assert len(starts) == 5  # robots.txt and four pages
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
    # Spaced 0.2 s apart by the parent; the server sees them with some jitter.
    assert min(gaps) >= 0.14 and sum(gaps) / len(gaps) >= 0.18, gaps


def test_unreachable_robots_means_disallow_for_now(server: WebServer, tmp_path: Path) -> None:
    _graph(server)
    server.robots_status = 503
    done = fetch("--crawl", server.url("/page/home"), "--retries", "1", "--backoff", "0.01",
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = records(done.stdout)
    assert "robots.txt unreachable" in record["error"] and record["status"] is None
    assert server.hits("/page/") == [] and len(server.hits("/robots.txt")) == 2


def test_ordered_output_follows_the_input(server: WebServer, tmp_path: Path) -> None:
    urls = [server.url("/size/1?lat=300")] + [server.url(f"/size/{n}") for n in range(2, 6)]
    # (one request a batch: a batch's records come back together, when its slowest ends)
    args = ["-", "-j", "2", "--per-worker", "1", "--per-host", "4"]
    plain = fetch(*args, cwd=tmp_path, stdin="\n".join(urls))
    ordered = fetch(*args, "--ordered", cwd=tmp_path, stdin="\n".join(urls))
    assert [r["url"] for r in records(plain.stdout)][-1] == urls[0]
    assert [r["url"] for r in records(ordered.stdout)] == urls


def test_output_error_is_reported_and_nothing_is_lost(server: WebServer, tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    urls = [server.url(f"/size/{n}") for n in range(1, 40)]
    (tmp_path / "urls.txt").write_text("\n".join(urls))
    broken = fetch("urls.txt", "--db", "r.sqlite", "--out", "/dev/full", cwd=tmp_path)
    assert broken.returncode == 1
    assert "cannot write /dev/full" in broken.stderr
    again = fetch("urls.txt", "--db", "r.sqlite", "--out", "-", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as db:
        stored = [row[0] for row in db.execute("SELECT url FROM results")]
    assert sorted(stored) == sorted(urls)
    assert len(server.hits("/size/")) == len(urls)  # what the first run stored was kept
    assert 0 < len(records(again.stdout)) < len(urls)


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "procpool", "fetch", *args, "--progress", "always"],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


@contextlib.contextmanager
def _running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """The command, started; on the way out, killed (its whole group) if still there."""
    proc = _start(args, cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def _wait_for_progress(proc: subprocess.Popen[str], at_least: int) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if " done," in line and int(line.split(": ")[1].split(" ")[0].replace(",", "")) >= at_least:
            return
    raise AssertionError("the command ended before reaching that point")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_resume_after_a_stop_has_no_duplicates_or_gaps(
    server: WebServer, tmp_path: Path, how: str
) -> None:
    urls = [server.url(f"/size/{n}?lat=40", host=1 + n % 4) for n in range(1, 201)]
    (tmp_path / "urls.txt").write_text("\n".join(urls))
    args = ["urls.txt", "--db", "r.sqlite", "-j", "2", "--per-host", "1"]
    with _running(args, tmp_path) as proc:
        _wait_for_progress(proc, 20)
        os.killpg(proc.pid, getattr(signal, how))
        status = proc.wait(30)
    assert status == (-9 if how == "SIGKILL" else 130)
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as db:
        first = db.execute("SELECT count(*) FROM results").fetchone()[0]
    assert 0 < first < len(urls)
    again = fetch(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "r.sqlite")) as db:
        rows = [row[0] for row in db.execute("SELECT url FROM results WHERE status = 200")]
    assert sorted(rows) == sorted(urls)
    assert f"{first:,} already in the database" in again.stderr or how == "SIGKILL"


def test_a_worker_killed_mid_request_costs_only_a_retry(
    server: WebServer, tmp_path: Path
) -> None:
    held = server.url("/fault/hold?n=1")
    urls = [held] + [server.url(f"/size/{n}?lat=20", host=1 + n % 4) for n in range(1, 41)]
    (tmp_path / "urls.txt").write_text("\n".join(urls))
    with _running(["urls.txt", "--out", "out.jsonl", "-j", "2", "--per-host", "4"],
                  tmp_path) as proc:  # fmt: skip
        port = server.held.get(timeout=30)  # the request is in a worker, unanswered
        os.kill(owner_of_connection(port, proc.pid), signal.SIGKILL)
        assert proc.wait(60) == 0
    found = by_url((tmp_path / "out.jsonl").read_text())
    assert set(found) == set(urls)
    assert all(r["status"] == 200 and r["error"] is None for r in found.values())
    assert found[held]["attempts"] == 2  # the killed worker's request, fetched again
    assert all(r["attempts"] <= 2 for r in found.values())  # only the lost ones again


def test_usage_errors(tmp_path: Path) -> None:
    bad = fetch("missing.txt", cwd=tmp_path)
    assert bad.returncode == 2 and "cannot read missing.txt" in bad.stderr
    bad = fetch("-", "--per-host", "0", cwd=tmp_path, stdin="")
    assert bad.returncode == 2 and "--per-host must be at least 1" in bad.stderr
    bad = fetch("--crawl", "ftp://x/", cwd=tmp_path)
    assert bad.returncode == 2 and "unsupported scheme" in bad.stderr
    helped = fetch("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "examples:" in helped.stdout
    assert json.dumps  # (json used by helpers)
