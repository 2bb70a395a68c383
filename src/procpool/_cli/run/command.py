"""The ``run``, ``results`` and ``status`` subcommands: arguments, checks, messages.

The work itself is in ``job`` (the loop), ``database``, ``input`` (inputs), ``target``
(the function), ``report`` (results and status output), ``inbox`` (the main loop's
wait) and ``progress`` (the status line).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sqlite3
import sys
from typing import Any

from procpool import cpu_count
from procpool._cli import CommandError
from procpool._cli.run.database import DEFAULT_DB, Claim, DbError, RunDB, RunInfo
from procpool._cli.run.input import InputError, Source
from procpool._cli.run.job import Runner, RunOptions, progress_mode
from procpool._cli.run.target import (
    TargetError,
    TargetSpec,
    fingerprint,
    load_function,
    parse_target,
)

_RUN_EPILOG = """\
inputs:
  One per line from INPUT (a file, or - for stdin; stdin is the default when it is not a
  terminal), or the integers 0..N-1 with --range N. Each line is passed as one str
  argument. With --json each line is decoded: a JSON list is passed as positional
  arguments, an object as keyword arguments, any other value as the single argument. A
  line that is not valid JSON (or not UTF-8) is stored as failed; the others run.

results:
  One row per input in the SQLite database --db, written by this process as work
  completes and committed at least every 0.2 s (WAL mode). A result is stored as JSON
  when it can be, else as its repr. `procpool results` prints or exports them,
  `procpool status` summarizes a run, also while it runs.

resume:
  An input's key is its line number and the sha256 of its text. Running the same command
  again skips inputs stored as done (and as failed, unless --retry-failed) and runs the
  rest: after Ctrl-C everything that finished is stored; after a crash, kill -9 or a
  reboot at most the last 0.2 s of results are lost, and are rerun. A line whose text
  changed is rerun and its row replaced. A change since the last run to the function's
  source (not to helpers it calls) or to the input file is reported, and the run goes
  on; a database holding another function's results is refused. --fresh starts over.

failures:
  An exception is stored as failed with its type, message and traceback (and rerun only
  with --retry-failed). A call whose worker dies (crash, kill, out of memory) or that
  runs past --task-timeout is retried --retries times, then stored as failed with
  WorkerLostError or TaskTimeoutError. Inputs travel to workers in chunks; when a
  chunk's worker dies or it times out, its inputs are rerun one at a time so that only
  the culprit fails (so the function should be safe to run twice on an input, as
  resuming requires anyway).

exit status:
  0 every input done, 1 some failed, 2 usage error, or a target, input or database that
  cannot be used, 130 on Ctrl-C (143 on SIGTERM): run the same command to resume.
"""


def register(subparsers: Any) -> None:
    """Add ``run``, ``results`` and ``status`` to the ``procpool`` command."""
    _register_run(subparsers)
    results = subparsers.add_parser(
        "results", help="print or export the results a run stored",
        description="Print or export the rows `procpool run` stored, in line order.",
    )  # fmt: skip
    _add_db_option(results)
    results.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    results.add_argument("--failed", action="store_true", help="only the failed inputs")
    results.set_defaults(handler=cmd_results)
    status = subparsers.add_parser(
        "status", help="summarize a run, also while it runs",
        description="Summarize the latest run stored in the database, also while it runs.",
    )  # fmt: skip
    _add_db_option(status)
    status.set_defaults(handler=cmd_status)


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=DEFAULT_DB, metavar="PATH",
        help=f"the results database (default: {DEFAULT_DB} in the current directory)",
    )  # fmt: skip


def _register_run(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a function over many inputs in parallel, durably and resumably",
        description="Run MODULE:FUNCTION (or path/to/file.py:FUNCTION) on every input in "
        "parallel, store each result in SQLite as it arrives, and resume where it stopped.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", metavar="MODULE:FUNCTION", help="the function to run")
    run.add_argument("input", nargs="?", metavar="INPUT", help="input file, or - for stdin")
    run.add_argument("--range", type=int, metavar="N", help="inputs are the integers 0..N-1")
    run.add_argument("--json", action="store_true", help="decode each line as JSON arguments")
    run.add_argument("-j", "--jobs", type=int, default=cpu_count(), metavar="N",
                     help="worker processes (default: the CPU count, %(default)s)")  # fmt: skip
    run.add_argument("--task-timeout", type=float, metavar="S",
                     help="stop a call after S seconds (TaskTimeoutError)")  # fmt: skip
    run.add_argument("--retries", type=int, default=0, metavar="K",
                     help="retry a call whose worker died or timed out K times")  # fmt: skip
    run.add_argument("--chunksize", type=int, metavar="N",
                     help="inputs per task (default: adapted to about 50 ms of work)")  # fmt: skip
    run.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(),
                     help="how workers start (default: the platform's)")  # fmt: skip
    run.add_argument("--backend", choices=("local", "dask"), default="local",
                     help="local worker processes, or a Dask cluster (the dask extra)")  # fmt: skip
    run.add_argument("--address", metavar="tcp://HOST:PORT",
                     help="with --backend dask: an existing scheduler (default: a "
                     "LocalCluster of --jobs workers on 127.0.0.1)")  # fmt: skip
    _add_db_option(run)
    run.add_argument("--retry-failed", action="store_true", help="rerun inputs stored as failed")
    run.add_argument("--fresh", action="store_true", help="discard stored results, start over")
    run.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                     help="the progress line on stderr (auto: when it is a terminal)")  # fmt: skip
    run.set_defaults(handler=cmd_run)


# -- run


def cmd_run(args: argparse.Namespace) -> int:
    options = RunOptions(
        jobs=args.jobs, json=args.json, task_timeout=args.task_timeout,
        retries=args.retries, chunksize=args.chunksize, start_method=args.start_method,
        retry_failed=args.retry_failed, backend=args.backend, address=args.address,
    )  # fmt: skip
    _check_options(args)
    spec, function_sha = _load_target(args.target)
    source = _open_source(args)
    db = _open_db(args.db)
    err = sys.stderr
    try:
        info = RunInfo(str(spec), function_sha, source.label, source.fingerprint(),
                       {"json": args.json})  # fmt: skip
        claim = db.start_run(info, args.fresh)
        _report_start(db, claim, info)
        runner = Runner(spec, source, db, options, err)
        runner.progress.mode = progress_mode(args.progress, err)
        try:
            how = runner.execute(check_stored=bool(claim.stored_done or claim.stored_failed))
        finally:
            runner.progress.clear()
        return _report_end(runner, how)
    except DbError as exc:
        if db.run_id:
            db.mark_stopped(str(exc))
        raise CommandError(str(exc)) from None
    finally:
        db.close()


def _check_options(args: argparse.Namespace) -> None:
    checks = [
        (args.jobs < 1, "--jobs must be at least 1"),
        (args.task_timeout is not None and not 0 < args.task_timeout < math.inf,
         "--task-timeout must be a positive number of seconds"),
        (args.retries < 0, "--retries must be 0 or more"),
        (args.chunksize is not None and args.chunksize < 1, "--chunksize must be at least 1"),
        (args.range is not None and args.range < 0, "--range must be 0 or more"),
        (args.range is not None and args.input is not None,
         "give either an INPUT or --range, not both"),
        (args.range is not None and args.json, "--json applies to lines of input, not --range"),
        (args.address is not None and args.backend != "dask", "--address needs --backend dask"),
        (args.start_method is not None and args.backend == "dask",
         "--start-method applies to the local backend only"),
    ]  # fmt: skip
    for failed, message in checks:
        if failed:
            raise CommandError(message)
    if args.input is None and args.range is None and sys.stdin.isatty():
        raise CommandError("give an input file, - for stdin, or --range N (see --help)")


def _load_target(text: str) -> tuple[TargetSpec, str]:
    try:
        spec = parse_target(text, os.getcwd())
        return spec, fingerprint(load_function(spec))
    except TargetError as exc:
        raise CommandError(str(exc)) from None


def _open_source(args: argparse.Namespace) -> Source:
    try:
        return Source.open(args.input, args.range, args.json)
    except InputError as exc:
        raise CommandError(str(exc)) from None


def _open_db(path: str) -> RunDB:
    try:
        return RunDB.open_for_run(path)
    except DbError as exc:
        raise CommandError(str(exc)) from None


def _say(text: str) -> None:
    print(f"procpool run: {text}", file=sys.stderr, flush=True)


def _report_start(db: RunDB, claim: Claim, info: RunInfo) -> None:
    _say(f"storing results in {os.path.abspath(db.path)} (run {claim.run_id})")
    previous = claim.previous
    if previous is None or not (claim.stored_done or claim.stored_failed):
        return
    how = previous["state"]
    if how == "running":  # start_run found its process gone
        how = "which did not finish: killed?"
    _say(
        f"resuming after run {previous['id']} ({how}): {claim.stored_done:,} done and "
        f"{claim.stored_failed:,} failed already stored"
    )
    for note in _changes(previous, info):
        _say(f"note: {note}")


def _changes(previous: sqlite3.Row, info: RunInfo) -> list[str]:
    """What differs from the previous run: reported, not refused."""
    run = f"run {previous['id']}"
    notes = []
    if previous["function_sha256"] != info.function_sha256:
        notes.append(
            f"{info.target} changed since {run} (its source differs): stored results came "
            f"from the earlier version (--fresh recomputes everything)"
        )
    if previous["input"] != info.input:
        notes.append(
            f"the input was {previous['input']} in {run}, it is {info.input} now: inputs "
            f"are matched by line number and content, so changed lines are rerun"
        )
    elif previous["input_fingerprint"] != info.input_fingerprint:
        notes.append(
            f"{info.input} changed since {run}: lines whose content changed are rerun, "
            f"the others are kept"
        )
    if json.loads(previous["options"]).get("json") != info.options["json"]:
        notes.append(f"--json was {'' if info.options['json'] else 'not '}used in {run}")
    return notes


def _report_end(runner: Runner, how: str) -> int:
    for line in runner.finish(how):
        print(line, file=sys.stderr)
    if how == "interrupted":
        _say("interrupted; run the same command again to resume")
        return runner.interrupt_status()
    if runner.stop_reason is not None:
        raise CommandError(f"{runner.stop_reason}; what finished is stored: run again to resume")
    tally = runner.tally
    return 1 if tally.failed or tally.skipped_failed else 0


# -- results and status


def cmd_results(args: argparse.Namespace) -> int:
    from procpool._cli.run.report import write_results

    db = _open_db_for_reading(args.db)
    try:
        write_results(db, args.format, args.failed, sys.stdout)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {args.db}: {exc}") from None
    finally:
        db.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from procpool._cli.run.report import status_lines

    db = _open_db_for_reading(args.db)
    try:
        for line in status_lines(db):
            print(line)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {args.db}: {exc}") from None
    finally:
        db.close()
    return 0


def _open_db_for_reading(path: str) -> RunDB:
    try:
        return RunDB.open_for_reading(path)
    except DbError as exc:
        raise CommandError(str(exc)) from None
