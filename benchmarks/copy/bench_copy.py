"""procpool copy / scan against cp -a, rsync and wc -l / grep -c, in one run.

    python benchmarks/copy/bench_copy.py [--dir /tmp/procpool-bench] [--repeat 3]

Trees (from tests/cli/copy/copy_trees.py, seeded): one big file, many small files, a
mixed tree. Each copy is timed from start to the end of a final ``sync``, with a cold
page cache when this process may write /proc/sys/vm/drop_caches (said in the output).
The disk's sequential write (dd, fdatasync) and read (cold) speeds are measured in the
same run, as the ceiling. ``scan`` runs with a warm cache against wc -l and grep -c.
Prints the median of --repeat runs and ratios to cp (or wc/grep).
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "cli" / "copy"))
from copy_trees import MIB, big_file, many_small, mixed

import procpool

PROCPOOL = [sys.executable, "-m", "procpool"]


SETTLE = 1.0  # seconds after a sync and a cache drop before the clock starts


def drop_caches() -> bool:
    """Sync, drop the page cache, then let the disk settle: the previous run's deleted
    tree is still being discarded (ext4 ``discard``) and would slow whichever
    contender comes next by up to 3x."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        dropped = True
    except OSError:
        dropped = False
    time.sleep(SETTLE)
    return dropped


def timed(command: list[str], cold: bool) -> float:
    if cold:
        drop_caches()
    else:
        subprocess.run(["sync"], check=True)
        time.sleep(SETTLE)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def disk_speeds(work: Path, size_mib: int) -> tuple[float, float]:
    """Sequential (write, read) MiB/s with dd: write with fdatasync, read cold."""
    path = work / "dd.bin"
    started = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={size_mib // 4}",
                    "conv=fdatasync"], check=True, capture_output=True)  # fmt: skip
    write = size_mib / (time.perf_counter() - started)
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True, capture_output=True)
    read = size_mib / (time.perf_counter() - started)
    path.unlink()
    return write, read


def median_of(repeat: int, run: Callable[[], float], clean: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        clean()
        times.append(run())
    clean()
    return statistics.median(times)


def bench_tree(name: str, src: Path, dst: Path, repeat: int, cold: bool) -> dict[str, float]:
    tools: dict[str, list[str]] = {"cp -a": ["cp", "-a", str(src), str(dst)]}
    if shutil.which("rsync"):
        tools["rsync -a --whole-file"] = ["rsync", "-a", "--whole-file", f"{src}/", str(dst)]
    for jobs in (1, 2):
        tools[f"procpool copy -j{jobs}"] = [*PROCPOOL, "copy", "-a", f"-j{jobs}", "-T",
                                            str(src), str(dst)]  # fmt: skip
    runs: dict[str, list[float]] = {label: [] for label in tools}
    for _ in range(repeat):  # interleaved, so a slow spell of the disk hits every row
        for label, command in tools.items():
            shutil.rmtree(dst, ignore_errors=True)
            runs[label].append(timed(command, cold))
    shutil.rmtree(dst, ignore_errors=True)
    results = {label: statistics.median(times) for label, times in runs.items()}
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    print(f"\n{name}: {size / MIB:,.0f} MiB in {sum(1 for _ in src.rglob('*')):,} entries")
    base = results["cp -a"]
    for label, seconds in results.items():
        print(f"  {label:24s} {seconds:7.3f} s  {size / MIB / seconds:8.1f} MiB/s  "
              f"{base / seconds:5.2f}x cp")  # fmt: skip
    return results


def bench_scan(work: Path, repeat: int, mib: int) -> None:
    path = work / "lines.txt"
    rng_lines = [b"alpha beta gamma %d error\n" % i if i % 7 == 0 else b"x" * (i % 60) + b"\n"
                 for i in range(100_000)]  # fmt: skip
    block = b"".join(rng_lines)
    with open(path, "wb") as f:
        for _ in range(max(1, (mib * MIB) // len(block))):
            f.write(block)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm
    size = path.stat().st_size
    rows = {
        "wc -l": ["wc", "-l", str(path)],
        "procpool scan --count-lines -j1": [*PROCPOOL, "scan", "--count-lines", "-j1", str(path)],
        "procpool scan --count-lines -j2": [*PROCPOOL, "scan", "--count-lines", "-j2", str(path)],
        "grep -c error": ["grep", "-c", "error", str(path)],
        "procpool scan --grep error --count -j2": [
            *PROCPOOL,
            "scan",
            "--grep",
            "error",
            "--count",
            "-j2",
            str(path),
        ],
    }
    print(f"\nscan (warm cache): {size / MIB:,.0f} MiB of lines")
    times: dict[str, float] = {}
    for label, command in rows.items():
        outputs: set[bytes] = set()
        times[label] = median_of(repeat, lambda c=command, o=outputs: _run_scan(c, o), _nothing)
        base = times["grep -c error" if "grep" in label else "wc -l"]
        versus = "grep -c" if "grep" in label else "wc -l"
        print(
            f"  {label:40s} {times[label]:7.3f} s  {size / MIB / times[label]:8.1f} MiB/s  "
            f"{base / times[label]:5.2f}x {versus}  -> {b','.join(sorted(outputs)).decode()}"
        )
    path.unlink()


def _run_scan(command: list[str], outputs: set[bytes]) -> float:
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True).stdout
    outputs.add(out.split()[0])
    return time.perf_counter() - started


def _nothing() -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/procpool-bench", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--scan-mib", default="256,4096",
                        help="sizes of the scanned files, MiB (default 256,4096)")  # fmt: skip
    args = parser.parse_args()
    work: Path = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # As `pip install` does: the commands start from bytecode, not by compiling
        # every module (this machine sets PYTHONDONTWRITEBYTECODE, which would leave
        # procpool's start-up 60 ms slower than any user's).
        compileall.compile_dir(str(Path(procpool.__file__).parent), quiet=1)
        cold = drop_caches()
        print(f"cold cache: {'yes (drop_caches before each run)' if cold else 'not permitted'}")
        if not shutil.which("rsync"):
            print("rsync is not installed: its rows are left out")
        write, read = disk_speeds(work, args.big_mib)
        print(f"disk ceiling: sequential write {write:,.0f} MiB/s, read {read:,.0f} MiB/s (dd)")
        trees = {"one big file": big_file(work / "big", size=args.big_mib * MIB),
                 "many small files": many_small(work / "small", count=5000, max_size=16 * 1024),
                 "mixed tree": mixed(work / "mixed", scale=40)}  # fmt: skip
        for name, src in trees.items():
            bench_tree(name, src, work / "dst", args.repeat, cold)
        for mib in map(int, args.scan_mib.split(",")):
            bench_scan(work, args.repeat, mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
