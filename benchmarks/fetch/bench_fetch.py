"""``procpool fetch`` against curl, xargs + curl, aria2c, wget2 and the tutorial's Pool(4).

N URLs of SIZE bytes from the local test web server (tests/cli/fetch/fetch_webserver.py,
one host, LATENCY injected per request) at concurrency C. Reports pages/s (median of
--repeat runs) and the Little's-law ceiling C / latency, both with the nominal latency
and with the mean time the server measured per request in the same runs.

    python3 benchmarks/fetch/bench_fetch.py            # 2,000 x 20 KiB, 50 ms, C=16
    python3 benchmarks/fetch/bench_fetch.py --urls 500 --repeat 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "cli" / "fetch"))

from fetch_webserver import WebServer  # noqa: E402


def tutorial_get_page(url: str) -> dict[str, object]:
    """The tutorial's get_page (``requests`` is not installed: urllib, one connection each)."""
    import urllib.request

    with urllib.request.urlopen(url) as response:
        return {"url": url, "text": response.read().decode()}


def run_tutorial(urls: list[str], work: Path) -> None:
    db = open(work / "db.txt", "a")  # noqa: SIM115

    def parse_page(res: dict[str, object]) -> None:
        db.write(f"url:{res['url']} size:{len(str(res['text']))}\n")

    p = Pool(4)
    for url in urls:
        p.apply_async(tutorial_get_page, args=(url,), callback=parse_page)
    p.close()
    p.join()
    db.close()


def command(args: list[str], stdin: str | None = None) -> Callable[[list[str], Path], None]:
    def run(urls: list[str], work: Path) -> None:
        (work / "urls.txt").write_text("\n".join(urls) + "\n")
        config = "".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls)
        (work / "curl.cfg").write_text(config)
        with open(work / (stdin or "urls.txt")) as given:
            subprocess.run(args, cwd=work, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=given if stdin else None)  # fmt: skip

    return run


def contenders(c: int) -> dict[str, tuple[str | None, Callable[[list[str], Path], None]]]:
    fetch = [sys.executable, "-m", "procpool", "fetch", "urls.txt", "--out", "/dev/null",
             "--per-host", str(2 * c)]  # fmt: skip
    return {
        f"procpool fetch -j 2 --per-worker {c // 2}": (
            None, command([*fetch, "-j", "2", "--per-worker", str(c // 2)])),
        f"procpool fetch -j 4 --per-worker {c // 4}": (
            None, command([*fetch, "-j", "4", "--per-worker", str(c // 4)])),
        f"curl -Z --parallel-max {c}": ("curl", command(
            ["curl", "-s", "-Z", "--parallel-max", str(c), "--config", "curl.cfg"])),
        f"xargs -P {c} curl": ("curl", command(
            ["xargs", "-P", str(c), "-n", "50", "curl", "-s", "-o", "/dev/null"], "urls.txt")),
        f"aria2c -j {c}": ("aria2c", command(
            ["aria2c", "-q", "-j", str(c), "-d", "out", "-i", "urls.txt"])),
        f"wget2 --max-threads {c}": ("wget2", command(
            ["wget2", "-q", f"--max-threads={c}", "-P", "out", "-i", "urls.txt"])),
        "tutorial: multiprocessing Pool(4) + callback": (None, run_tutorial),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--size", type=int, default=20 * 1024)
    parser.add_argument("--latency", type=float, default=0.050)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each procpool row")
    options = parser.parse_args()
    server = WebServer()
    server.start()
    try:
        _bench(server, options)
    finally:
        server.stop()


def _bench(server: WebServer, o: argparse.Namespace) -> None:
    server.latency = o.latency
    urls = [server.url(f"/size/{o.size}?n={i}") for i in range(o.urls)]
    c = o.concurrency
    print(f"{o.urls:,} URLs x {o.size:,} B, {o.latency * 1000:.0f} ms latency, concurrency {c}")
    service: list[float] = []
    rows: list[tuple[str, float]] = []
    high = 0
    for name, (tool, run) in contenders(c).items():
        if tool is not None and shutil.which(tool) is None:
            print(f"  {name:48} skipped: {tool} is not installed")
            continue
        repeats = o.repeat if name.startswith("procpool") else 1
        rates = []
        for _ in range(repeats):
            server.reset()
            server.latency = o.latency
            with tempfile.TemporaryDirectory() as work:
                started = time.perf_counter()
                run(urls, Path(work))
                wall = time.perf_counter() - started
            hits = server.hits("/size/")
            assert len(hits) >= o.urls, f"{name}: {len(hits)} requests for {o.urls} URLs"
            service.extend(h.end - h.start for h in hits)
            high = max(high, max(server.high_water.values()))
            rates.append(o.urls / wall)
        rows.append((name, statistics.median(rates)))
        spread = f" (runs: {', '.join(f'{r:.0f}' for r in rates)})" if repeats > 1 else ""
        print(f"  {name:48} {rows[-1][1]:7.1f} pages/s{spread}; at most {high} at once at "
              "the server", flush=True)  # fmt: skip
        high = 0
    _verdict(rows, c, o.latency, statistics.fmean(service))


def _verdict(rows: list[tuple[str, float]], c: int, latency: float, measured: float) -> None:
    nominal, ceiling = c / latency, c / measured
    print(f"Little's-law ceiling: {nominal:.0f} pages/s nominal (C / {latency * 1000:.0f} ms); "
          f"{ceiling:.0f} pages/s with the {measured * 1000:.1f} ms the server measured")  # fmt: skip
    rates = dict(rows)
    best = max(r for n, r in rows if n.startswith("procpool"))
    tutorial = rates.get("tutorial: multiprocessing Pool(4) + callback")
    print(f"procpool fetch (best row): {100 * best / nominal:.0f}% of the nominal ceiling, "
          f"{100 * best / ceiling:.0f}% of the measured one")  # fmt: skip
    if tutorial:
        print(f"  {best / tutorial:.1f}x the tutorial's Pool(4) version")
    for name, rate in rows:
        if name.startswith(("curl", "xargs", "aria2c", "wget2")):
            print(f"  {best / rate:.2f}x {name}")


if __name__ == "__main__":
    main()
