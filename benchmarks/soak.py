"""Soak: 100,000 tasks while a random worker is SIGKILLed every 1,000 completions.

Every task must end accounted for: a result, or a WorkerLostError (after its retries).
Run: python3 benchmarks/soak.py [--tasks N] [--every K] [--retries R] [--start-method M]
         [--imap]   (imap_unordered with chunksize=1: the tasks travel in batches)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time

import procpool


def work(x: int) -> int:
    return x * 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--start-method", default="fork")
    parser.add_argument("--imap", action="store_true", help="imap_unordered, chunksize=1")
    args = parser.parse_args()
    rng = random.Random(1)
    ok = lost = other = kills = 0
    started = time.perf_counter()
    with procpool.Pool(2, context=args.start_method, retries=args.retries) as pool:
        if args.imap:
            counts = _soak_imap(pool, args.tasks, args.every, rng)
            ok, lost, other, kills = counts
            pool.close()
            pool.join()
            return _report(args, ok, lost, other, kills, started)
        results = [pool.apply_async(work, (i,)) for i in range(args.tasks)]
        for i, result in enumerate(results):
            if i and i % args.every == 0:
                pids = pool.worker_pids
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
            try:
                if result.get(timeout=60) == 2 * i:
                    ok += 1
                else:
                    other += 1
            except procpool.WorkerLostError:
                lost += 1
            except Exception as exc:  # anything else is a bug
                if other < 5:
                    print("unexpected:", type(exc).__name__, exc, file=sys.stderr)
                other += 1
        pool.close()
        pool.join()
    return _report(args, ok, lost, other, kills, started)


def _kill_one(pool: procpool.Pool, rng: random.Random) -> int:
    pids = pool.worker_pids
    if pids:
        try:
            os.kill(rng.choice(pids), signal.SIGKILL)
            return 1
        except ProcessLookupError:
            pass
    return 0


def _soak_imap(
    pool: procpool.Pool, tasks: int, every: int, rng: random.Random
) -> tuple[int, int, int, int]:
    """Every item comes back once, doubled, or as a WorkerLostError in its place."""
    ok = lost = other = kills = 0
    seen: set[int] = set()
    it = pool.imap_unordered(work, range(tasks), chunksize=1)
    done = 0
    while True:
        if done and done % every == 0:
            kills += _kill_one(pool, rng)
        try:
            value = next(it)
        except StopIteration:
            break
        except procpool.WorkerLostError:
            lost += 1
        else:
            if value % 2 == 0 and 0 <= value // 2 < tasks and value // 2 not in seen:
                seen.add(value // 2)
                ok += 1
            else:
                other += 1
        done += 1
    return ok, lost, other, kills


def _report(
    args: argparse.Namespace, ok: int, lost: int, other: int, kills: int, started: float
) -> int:
    wall = time.perf_counter() - started
    total = ok + lost + other
    print(
        f"tasks={args.tasks} accounted={total} ok={ok} worker_lost={lost} other={other} "
        f"kills={kills} retries={args.retries} start_method={args.start_method} "
        f"{'imap_unordered ' if args.imap else ''}"
        f"wall={wall:.1f}s rate={args.tasks / wall:,.0f}/s"
    )
    return 0 if total == args.tasks and other == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
