"""``procpool fetch``: its arguments, their checks, and the run's messages."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from typing import Any

import procpool
from procpool import cpu_count
from procpool._cli import CommandError

DEFAULT_AGENT = f"procpool/{procpool.__version__} (+https://pypi.org/project/procpool/)"

_EPILOG = """\
examples:
  procpool fetch urls.txt > results.jsonl          one JSON record per URL on stdout
  procpool fetch urls.txt --db fetch.sqlite        resumable: run again to finish
  procpool fetch - --format text < urls.txt        the tutorial's "url:... size:..." lines
  procpool fetch urls.txt -j 4 --per-worker 16 --per-host 4 --rate 10 --save-bodies pages/
  procpool fetch --crawl https://example.org/ --depth 2 --same-host --max-pages 500

input:
  One URL a line (blank lines and # comments skipped, duplicates removed), read as the
  fetch goes so a huge file takes bounded memory. Only http and https URLs are fetched;
  any other line gets a record with its error.

records:
  One per URL, written by this process as each result arrives (--ordered: in input
  order, once all before it are done): url, final_url, status, bytes, sha256,
  content_type, elapsed_ms, attempts, error, fetched_at. They go to stdout, or to --out;
  with --db they go to the SQLite database (table "fetched", view "results"), and to
  stdout only with --out -. A body cut at --max-bytes (decompressed size) is recorded
  with the error "truncated...".

politeness and failures:
  At most --per-host requests in flight per host (scheme, name, port) and at most
  --rate starts a second per host, across all workers. Connection errors, resets,
  timeouts and 408/425/429/500/502/503/504 are retried --retries times after an
  exponential backoff with full jitter, or after Retry-After (capped at
  --max-retry-after), which also pauses that host; the parent waits, never a worker.
  Redirects are followed by the parent, under the same limits; loops are detected.

crawl:
  --crawl SEED follows links of HTML pages up to --depth, within the seeds' hosts with
  --same-host, up to --max-pages records. robots.txt is fetched first from each host and
  obeyed (Crawl-delay too) unless --ignore-robots; an unreachable robots.txt means no
  page of that host is fetched this run.

resume and exit status:
  With --db, a rerun skips URLs already stored (--retry-failed: except failed ones) and
  a crawl follows the links stored with them. Ctrl-C stops scheduling, gives requests in
  flight --grace seconds, stores what finished; rerun to resume. Exit status: 0 all
  records successful, 1 some failed (or an output failed), 2 usage error, 130 Ctrl-C.
"""


def register(subparsers: Any) -> None:
    """Add ``fetch`` to the ``procpool`` command."""
    p = subparsers.add_parser(
        "fetch", help="download many URLs in parallel, politely and resumably",
        description="Download many URLs (or crawl from seeds) with worker processes each "
        "keeping several requests in flight; record each result as it arrives.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("urls", nargs="?", metavar="URLS_FILE", help="URLs, one a line; - for stdin")
    _add_concurrency(p)
    _add_requests(p)
    _add_crawl(p)
    _add_output(p)
    p.set_defaults(handler=cmd_fetch)


def _add_concurrency(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("concurrency")
    g.add_argument("-j", "--jobs", type=int, default=min(cpu_count(), 4), metavar="N",
                   help="worker processes (default: %(default)s)")  # fmt: skip
    g.add_argument("--per-worker", type=int, default=8, metavar="N",
                   help="requests in flight per worker (default: %(default)s)")  # fmt: skip
    g.add_argument("--per-host", type=int, default=2, metavar="N",
                   help="requests in flight per host (default: %(default)s)")  # fmt: skip
    g.add_argument("--rate", type=float, metavar="R", help="at most R requests/s per host")
    g.add_argument("--max-inflight", type=int, metavar="N",
                   help="requests in flight in all (default: jobs x per-worker)")  # fmt: skip


def _add_requests(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("requests")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    g.add_argument("--read-timeout", type=float, default=15.0, metavar="S",
                   help="longest wait for the next bytes")  # fmt: skip
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="total deadline per request (default: %(default)s)")  # fmt: skip
    g.add_argument("--max-bytes", type=_size, default=10 * 2**20, metavar="N",
                   help="cap on a body, decompressed (K/M/G suffixes; default 10M)")  # fmt: skip
    g.add_argument("--max-redirects", type=int, default=10, metavar="N")
    g.add_argument("--retries", type=int, default=3, metavar="K")
    g.add_argument("--backoff", type=float, default=0.5, metavar="S",
                   help="base of the exponential backoff (default: %(default)s)")  # fmt: skip
    g.add_argument("--max-retry-after", type=float, default=60.0, metavar="S",
                   help="cap on any wait before a retry (default: %(default)s)")  # fmt: skip
    g.add_argument("--user-agent", default=DEFAULT_AGENT, metavar="UA")


def _add_crawl(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("crawling")
    g.add_argument("--crawl", action="append", default=[], metavar="SEED",
                   help="start from SEED and follow links (repeatable)")  # fmt: skip
    g.add_argument("--depth", type=int, default=1, metavar="N",
                   help="links followed from a seed, at most (default: %(default)s)")  # fmt: skip
    g.add_argument("--same-host", action="store_true", help="stay on the seeds' hosts")
    g.add_argument("--max-pages", type=int, metavar="N", help="stop adding pages after N")
    g.add_argument("--ignore-robots", action="store_true", help="do not read robots.txt")


def _add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="PATH", help="write records here (- for stdout)")
    g.add_argument("--format", choices=("jsonl", "text"), default="jsonl")
    g.add_argument("--db", metavar="PATH", help="SQLite database of records; reruns resume")
    g.add_argument("--retry-failed", action="store_true",
                   help="with --db: fetch again the URLs stored as failed")  # fmt: skip
    g.add_argument("--save-bodies", metavar="DIR", help="store bodies in DIR by sha256")
    g.add_argument("--ordered", action="store_true", help="records in input order")
    g.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="after Ctrl-C, time given to requests in flight")  # fmt: skip
    g.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress on stderr (auto: when it is a terminal)")  # fmt: skip


def _size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        value = int(float(digits) * scale)
    except ValueError:
        message = f"not a size: {text!r} (say 1000, 512K or 10M)"
        raise argparse.ArgumentTypeError(message) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def check(args: argparse.Namespace) -> None:
    positive = ("connect_timeout", "read_timeout", "timeout", "max_retry_after")
    checks = [
        (args.jobs < 1, "--jobs must be at least 1"),
        (args.per_worker < 1, "--per-worker must be at least 1"),
        (args.per_host < 1, "--per-host must be at least 1"),
        (args.rate is not None and not 0 < args.rate < math.inf, "--rate must be positive"),
        (args.max_inflight is not None and args.max_inflight < 1,
         "--max-inflight must be at least 1"),
        (args.retries < 0, "--retries must be 0 or more"),
        (args.backoff < 0, "--backoff must be 0 or more"),
        (args.max_redirects < 0, "--max-redirects must be 0 or more"),
        (args.depth < 0, "--depth must be 0 or more"),
        (args.max_pages is not None and args.max_pages < 1, "--max-pages must be at least 1"),
        (args.grace < 0, "--grace must be 0 or more"),
        (args.retry_failed and not args.db, "--retry-failed needs --db"),
        (args.same_host and not args.crawl, "--same-host applies to --crawl"),
    ]  # fmt: skip
    for name in positive:
        message = f"--{name.replace('_', '-')} must be a positive number of seconds"
        checks.append((not 0 < getattr(args, name) < math.inf, message))
    for failed, message in checks:
        if failed:
            raise CommandError(message)
    if args.urls is None and not args.crawl and sys.stdin.isatty():
        raise CommandError("give a URLS_FILE, - for stdin, or --crawl SEED (see --help)")
    if importlib.util.find_spec("httpx") is None:
        raise CommandError("procpool fetch needs httpx: pip install 'procpool[fetch]'")


def cmd_fetch(args: argparse.Namespace) -> int:
    from procpool._cli.fetch.setup import build

    check(args)
    started = time.monotonic()
    crawler = build(args, started)
    how = crawler.run()
    for line in _summary(crawler, time.monotonic() - started, how):
        print(line, file=sys.stderr)
    for error in crawler.outputs.errors:
        print(f"procpool fetch: error: {error}", file=sys.stderr)
    if how == "interrupted" and crawler.stop_reason == "interrupted":
        print("procpool fetch: interrupted; run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    if crawler.stop_reason is not None:
        print(f"procpool fetch: stopped: {crawler.stop_reason}", file=sys.stderr)
        return 1
    return 1 if crawler.stats.failed or crawler.outputs.errors else 0


def _summary(crawler: Any, wall: float, how: str) -> list[str]:
    from procpool._cli.fetch.report import summary

    return summary(crawler.stats, wall, how)
