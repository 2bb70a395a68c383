"""The ``scan`` subcommand: one large file read by several processes at once."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from procpool import Pool, cpu_count
from procpool._cli import CommandError, parse_size
from procpool._cli.scan.ranges import (
    GrepJob,
    GrepResult,
    ScanJob,
    chunk_digest,
    count_newlines,
    grep,
)

_EPILOG = """\
examples:
  procpool scan --count-lines -j4 access.log           the same number as wc -l
  procpool scan --grep ' 500 ' access.log > errors      the matching lines, in file order
  procpool scan --grep 'timeout' --count access.log     as grep -c
  procpool scan --chunk-hashes --json disk.img > disk.manifest.json

how it works:
  The file is cut into --block-size byte ranges, one task each, read by -j processes
  at once with pread. For --grep each worker moves both ends of its range to the next
  line start, so every line is read by exactly one worker (none split, none twice);
  results come back in file order. --count-lines counts newline bytes, as wc -l does.

--grep:
  PATTERN is a Python regular expression (re, on bytes, MULTILINE: ^ and $ match at
  line ends), searched within each line; --ignore-case as grep -i. It is not grep's
  syntax: use \\d, (a|b), and so on.

--chunk-hashes:
  A manifest of BLAKE2b-256 digests, one per --block-size chunk (offset, length,
  digest), and a root digest over the list. A whole-file SHA-256 (or any such hash)
  cannot be split across processes: each step of it needs the state left by all the
  bytes before, so it is one sequential pass by nature. Two files are equal exactly
  when their manifests, made with the same --block-size, are equal; compare those.

exit status:
  0 done (for --grep, also with no match), 1 the file could not be read, 2 usage error.
"""


def register(subparsers: Any) -> None:
    """Add ``scan`` to the ``procpool`` command."""
    p = subparsers.add_parser(
        "scan", help="read one large file with several processes: count lines, grep, hash",
        description="Read FILE in parallel byte ranges (aligned to line boundaries where "
        "lines matter) and count its lines, grep it, or hash it chunk by chunk.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("file", metavar="FILE", help="a regular file")
    ops = p.add_mutually_exclusive_group(required=True)
    ops.add_argument("--count-lines", action="store_true", help="count lines (as wc -l)")
    ops.add_argument("--grep", metavar="REGEX", help="print the lines matching REGEX, in order")
    ops.add_argument("--chunk-hashes", action="store_true", help="a per-chunk BLAKE2b manifest")
    p.add_argument("-c", "--count", action="store_true", help="with --grep: count matching lines")
    p.add_argument("-i", "--ignore-case", action="store_true", help="with --grep: ignore case")
    p.add_argument("-j", "--jobs", type=int, default=cpu_count(), metavar="N",
                   help="worker processes (default: the CPU count, %(default)s)")  # fmt: skip
    p.add_argument("--block-size", type=parse_size, default=16 << 20, metavar="SIZE",
                   help="bytes per task (default 16M)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_scan)


def _check(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise CommandError("--jobs must be at least 1")
    if args.block_size < 1:
        raise CommandError("--block-size must be at least 1 byte")
    if (args.count or args.ignore_case) and args.grep is None:
        raise CommandError("--count and --ignore-case go with --grep")
    if args.grep is not None:
        try:
            re.compile(args.grep.encode())
        except re.error as exc:
            raise CommandError(f"--grep: not a valid Python regular expression: {exc}") from None
    try:
        st = os.stat(args.file)
    except OSError as exc:
        raise CommandError(f"cannot read {args.file!r}: {exc.strerror}", 1) from None
    if not os.path.isfile(args.file):
        raise CommandError(f"{args.file!r} is not a regular file (scan reads files by offset)")
    return st.st_size


def jobs_for(path: str, size: int, block_size: int) -> list[ScanJob]:
    """The ranges of ``block_size`` bytes covering the file (one, empty, for an empty file)."""
    starts = range(0, max(size, 1), block_size)
    return [ScanJob(path, start, min(start + block_size, size), size) for start in starts]


def cmd_scan(args: argparse.Namespace) -> int:
    size = _check(args)
    jobs = jobs_for(args.file, size, args.block_size)
    try:
        with Pool(min(args.jobs, len(jobs))) as pool:
            if args.count_lines:
                _print_count("lines", sum(pool.imap_unordered(count_newlines, jobs)), args.json)
            elif args.grep is not None:
                _grep(pool, jobs, args)
            else:
                _manifest(pool.imap(chunk_digest, jobs), jobs, args)
            pool.close()
            pool.join()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file!r}: {exc.strerror}", 1) from None
    return 0


def _print_count(what: str, count: int, as_json: bool) -> None:
    print(json.dumps({what: count}) if as_json else count)


def _grep(pool: Pool, jobs: list[ScanJob], args: argparse.Namespace) -> None:
    tasks = [GrepJob(job, args.grep.encode(), args.ignore_case, args.count) for job in jobs]
    results: Iterator[GrepResult] = pool.imap(grep, tasks)
    if args.count:
        _print_count("matching_lines", sum(r.count for r in results), args.json)
        return
    out = sys.stdout.buffer
    for result in results:
        for line in result.lines:
            if args.json:
                out.write(json.dumps(line.decode("utf-8", "backslashreplace")).encode() + b"\n")
            else:
                out.write(line + b"\n")
    out.flush()


def _manifest(digests: Iterator[str], jobs: list[ScanJob], args: argparse.Namespace) -> None:
    root = hashlib.blake2b(digest_size=32)
    chunks = []
    for job, digest in zip(jobs, digests, strict=True):
        root.update(bytes.fromhex(digest))
        chunks.append({"offset": job.start, "length": job.end - job.start, "digest": digest})
    if args.json:
        print(json.dumps({"file": args.file, "size": jobs[0].size, "algorithm": "blake2b-256",
                          "block_size": args.block_size, "chunks": chunks,
                          "root": root.hexdigest()}, indent=1))  # fmt: skip
        return
    print(f"# blake2b-256 per {args.block_size}-byte chunk of {args.file}; offset length digest")
    for chunk in chunks:
        print(f"{chunk['offset']}\t{chunk['length']}\t{chunk['digest']}")
    print(f"# root (blake2b-256 of the chunk digests): {root.hexdigest()}")
