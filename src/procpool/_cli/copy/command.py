"""The ``copy`` subcommand: arguments, checks, and the run from walk to summary."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Any

from procpool import cpu_count
from procpool._cli import CommandError, parse_size
from procpool._cli.copy.kernel import DIGEST_NAME
from procpool._cli.copy.place import Placer, sync_dir
from procpool._cli.copy.plan import PlanError, Rule, check_source, pair_targets, walk
from procpool._cli.copy.report import Reporter, Stats, summary, write_stats
from procpool._cli.copy.runner import Copier, Sizes, Workers
from procpool._cli.copy.tasks import Settings

_EPILOG = f"""\
examples:
  procpool copy -a -j4 photos/ /mnt/backup/          photos/ into /mnt/backup/photos
  procpool copy -a -T photos /mnt/backup/photos      the same; rerun: only what changed
  procpool copy -a --progress big.img /mnt/disk/big.img
  procpool copy -r --exclude '*.pyc' --exclude .git src/ /tmp/src-copy
  procpool copy -a --verify --stats-json stats.json data/ /backup/   then compare digests

how it works:
  The parent walks the sources, makes directories, symlinks and FIFOs, and keeps the
  hardlink map (each hardlinked inode is copied once, then linked). Files go to the
  workers largest first: files of --chunk-cutoff bytes or more as --chunk-size byte
  ranges, smaller ones in batches. Bytes move with copy_file_range, else sendfile,
  else pread/pwrite; sparse files keep their holes. Directory metadata is set last.

safety and resume:
  Each file is written under a temporary name beside its destination (.NAME.procpool.tmp)
  and renamed into place when complete; a chunked file is written to .NAME.procpool.part
  with a journal of finished chunks (.NAME.procpool.journal). Run the same command again
  after Ctrl-C, a crash or kill -9: files of the same size and mtime are skipped
  (--checksum compares content instead), a chunked file resumes from its journal.
  --verify re-reads both sides and compares {DIGEST_NAME} digests per file or chunk.

filters:
  --exclude/--include PATTERN (fnmatch globs), tried in the order given; the first that
  matches decides, nothing matching means included. A pattern with a / matches the path
  below the source (a/b/*.log), one without matches the name. An excluded directory is
  not entered.

exit status:
  0 all copied, 1 something failed (each error is reported on stderr and the rest goes
  on, unless --fail-fast), 2 usage error, 130 on Ctrl-C (run again to resume).
"""



class _RuleAction(argparse.Action):
    """--include/--exclude append to one list, so their order is kept."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        rules = list(getattr(namespace, "rules", None) or [])
        rules.append(Rule(self.const, values))
        namespace.rules = rules


def register(subparsers: Any) -> None:
    """Add ``copy`` to the ``procpool`` command."""
    p = subparsers.add_parser(
        "copy", help="copy files and trees with several processes (cp-like, resumable)",
        description="Copy SRC to DST, or several SRCs into the directory DST, with worker "
        "processes: large files in parallel byte ranges, small ones in batches.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("paths", nargs="+", metavar="SRC... DST", help="sources, then the target")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    p.add_argument("-a", "--archive", action="store_true",
                   help="-r, and keep mode, timestamps (ns), ownership when permitted, "
                   "symlinks, hardlinks, xattrs")  # fmt: skip
    p.add_argument("-T", "--no-target-directory", action="store_true",
                   help="DST is the copy of the one SRC, even when it is a directory "
                   "(a rerun then goes to the same place)")  # fmt: skip
    p.add_argument("-j", "--jobs", type=int, default=cpu_count(), metavar="N",
                   help="worker processes (default: the CPU count, %(default)s)")  # fmt: skip
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="print what would be done (stdout), change nothing")  # fmt: skip
    p.add_argument("--exclude", action=_RuleAction, const=False, metavar="PATTERN",
                   help="leave out what matches (see filters)")  # fmt: skip
    p.add_argument("--include", action=_RuleAction, const=True, metavar="PATTERN",
                   help="keep what matches, before a later --exclude")  # fmt: skip
    p.add_argument("--progress", action="store_true",
                   help="bytes, files, rate, ETA on stderr (default: on a terminal)")  # fmt: skip
    p.add_argument(
        "--stats-json", metavar="PATH", help="write the run's counts as JSON (- for stdout)"
    )
    p.add_argument("--chunk-size", type=parse_size, default=32 << 20, metavar="SIZE",
                   help="byte range per task of a large file (default 32M)")  # fmt: skip
    p.add_argument("--chunk-cutoff", type=parse_size, metavar="SIZE",
                   help="files this large are chunked (default: twice --chunk-size)")  # fmt: skip
    p.add_argument("--fsync", action="store_true", help="sync files and directories to disk")
    p.add_argument("--checksum", action="store_true",
                   help="skip files whose content is the same (not size and mtime)")  # fmt: skip
    p.add_argument("--verify", action="store_true",
                   help=f"re-read both sides, compare {DIGEST_NAME} digests")  # fmt: skip
    p.add_argument("--fail-fast", action="store_true", help="stop at the first error")
    p.add_argument("--bwlimit", type=parse_size, metavar="RATE",
                   help="at most RATE bytes per second in all (e.g. 50M)")  # fmt: skip
    p.add_argument(
        "-v", "--verbose", action="store_true", help="a line per file and chunk done (stdout)"
    )
    p.set_defaults(handler=cmd_copy, rules=[])


def _check(args: argparse.Namespace) -> None:
    if len(args.paths) < 2:
        raise CommandError("give at least one SRC and a DST (see --help)")
    if args.jobs < 1:
        raise CommandError("--jobs must be at least 1")
    if args.chunk_size < 4096:
        raise CommandError("--chunk-size must be at least 4K")
    if args.chunk_cutoff is not None and args.chunk_cutoff < 1:
        raise CommandError("--chunk-cutoff must be at least 1")
    if args.bwlimit is not None and args.bwlimit < 1:
        raise CommandError("--bwlimit must be at least 1 byte per second")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cmd_copy(args: argparse.Namespace, workers: Workers | None = None) -> int:
    """Run ``procpool copy``; ``workers`` swaps the task functions (tests)."""
    _check(args)
    *sources, dst = args.paths
    try:
        pairs = pair_targets(sources, dst, args.no_target_directory)
    except PlanError as exc:
        raise CommandError(str(exc)) from None
    stats = Stats()
    report = Reporter(sys.stderr, args.progress or sys.stderr.isatty(), stats)
    settings = Settings(args.archive, args.fsync, args.verify, args.checksum, _umask())
    placer = Placer(settings, stats, report, args.dry_run,
                    _sayer(args.verbose or args.dry_run))  # fmt: skip
    sizes = Sizes(args.chunk_size, args.chunk_cutoff or 2 * args.chunk_size)
    workers = replace(workers or Workers(args.jobs), jobs=args.jobs, bwlimit=args.bwlimit)
    copier = Copier(placer, sizes, workers, args.fail_fast)
    how = "finished"
    try:
        _run(pairs, args, placer, copier)
    except KeyboardInterrupt:
        how = "interrupted (run the same command again to resume)"
    stats.seconds = report.elapsed()
    report.line(summary(stats, how, args.dry_run))
    if args.stats_json:
        write_stats(stats, args.stats_json, sys.stdout)
    if how != "finished":
        return 130
    return 1 if stats.errors or stats.mismatches else 0


def _run(pairs: list[tuple[str, str]], args: argparse.Namespace, placer: Placer,
         copier: Copier) -> None:  # fmt: skip
    recursive = args.recursive or args.archive
    rules = tuple(args.rules)
    files = []
    for src, target in pairs:
        try:
            root = check_source(src, target, recursive)
        except PlanError as exc:
            placer.report.error(src, str(exc))
            continue
        for entry in walk(root, rules, placer.report.error):
            if placer.place(entry):
                files.append(entry)
    if not (args.fail_fast and placer.stats.errors):
        copier.run(files)
    placer.make_hardlinks()
    placer.finish_dirs(args.fsync)
    if args.fsync and not args.dry_run:
        for parent in {os.path.dirname(os.path.abspath(t)) for _, t in pairs}:
            sync_dir(parent)
    placer.report.tick(force=True)


def _sayer(enabled: bool) -> Any:
    def say(text: str) -> None:
        if enabled:
            sys.stdout.write(os.fsencode(text).decode("utf-8", "backslashreplace") + "\n")
            sys.stdout.flush()

    return say
