"""How often a worker killed while idle costs a call that never reached it.

Each round: one blocking call (both workers idle after it), SIGKILL to one worker,
then at once four ``apply_async`` calls, some of which the scheduler hands to the
dying worker before it sees the death. A call the worker never read should run on
the other worker; one it read may have run, and fails with WorkerLostError.

    python3 benchmarks/idle_death.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import os
import signal

import procpool


def double(x: int) -> int:
    return 2 * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    rounds = parser.parse_args().rounds
    lost = 0
    with procpool.Pool(2) as pool:
        for _ in range(rounds):
            assert pool.apply(double, (1,)) == 2
            try:
                os.kill(pool.worker_pids[0], signal.SIGKILL)
            except ProcessLookupError:  # a worker still being replaced
                continue
            calls = [pool.apply_async(double, (i,)) for i in range(4)]
            try:
                assert [c.get(30) for c in calls] == [0, 2, 4, 6]
            except procpool.WorkerLostError:
                lost += 1
    print(f"rounds in which a call failed with WorkerLostError: {lost} of {rounds}")


if __name__ == "__main__":
    main()
