"""From parsed arguments to a ready :class:`Crawler`: outputs opened, resume loaded."""

from __future__ import annotations

import argparse
import os
import sys

from procpool._cli import CommandError
from procpool._cli.fetch.crawler import Crawler, Plan
from procpool._cli.fetch.links import check_url
from procpool._cli.fetch.output import Database, OutputError, Outputs, StreamOutput, open_stream
from procpool._cli.fetch.report import Progress
from procpool._cli.fetch.source import Source, SourceError
from procpool._cli.fetch.worker import Settings


def plan_from(args: argparse.Namespace) -> Plan:
    settings = Settings(
        connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
        total_timeout=args.timeout, max_bytes=args.max_bytes, user_agent=args.user_agent,
        save_dir=os.path.abspath(args.save_bodies) if args.save_bodies else None,
        connections=args.per_worker,
    )  # fmt: skip
    for seed in args.crawl:
        problem = check_url(seed)
        if problem is not None:
            raise CommandError(f"--crawl {seed}: {problem}")
    return Plan(
        settings, jobs=args.jobs, per_worker=args.per_worker, per_host=args.per_host,
        rate=args.rate, max_inflight=args.max_inflight or args.jobs * args.per_worker,
        retries=args.retries, backoff=args.backoff, max_retry_after=args.max_retry_after,
        max_redirects=args.max_redirects, seeds=tuple(args.crawl),
        depth=args.depth if args.crawl else 0, same_host=args.same_host,
        max_pages=args.max_pages, robots=bool(args.crawl) and not args.ignore_robots,
        grace=args.grace,
    )  # fmt: skip


def _outputs(args: argparse.Namespace) -> Outputs:
    db = None
    try:
        if args.db:
            db = Database(args.db)
            if args.retry_failed:
                db.forget_failed()
        streams: list[StreamOutput] = []
        out = args.out if args.out is not None else (None if args.db else "-")
        if out is not None:
            streams.append(open_stream(out, args.format, append=bool(args.db)))
    except OutputError as exc:
        if db is not None:
            db.close()
        raise CommandError(str(exc)) from None
    return Outputs(streams, db, args.ordered)


def build(args: argparse.Namespace, started: float) -> Crawler:
    plan = plan_from(args)
    if args.save_bodies:
        try:
            os.makedirs(args.save_bodies, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"--save-bodies {args.save_bodies}: {exc.strerror}") from None
    outputs = _outputs(args)
    progress = Progress(sys.stderr, _progress_mode(args.progress), started)
    crawler = Crawler(plan, outputs, None, progress)
    if args.urls is not None:
        try:
            crawler.source = Source(args.urls, lambda: crawler.inbox.post(None))
        except SourceError as exc:
            outputs.close()
            raise CommandError(str(exc)) from None
        crawler.input_pending()
    if outputs.db is not None:
        crawler.resume_from(outputs.db.stored(args.retry_failed))
    return crawler


def _progress_mode(choice: str) -> str:
    if choice == "never":
        return "off"
    if sys.stderr.isatty():
        return "tty"
    return "lines" if choice == "always" else "off"
