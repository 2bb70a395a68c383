"""Helpers for the fetch tests: run the command, read its records."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TIMEOUT = 60.0


def fetch(*args: object, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m procpool fetch ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "procpool", "fetch", *map(str, args)],
        cwd=cwd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ),
    )  # fmt: skip


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def by_url(text: str) -> dict[str, dict[str, Any]]:
    found = records(text)
    urls = [r["url"] for r in found]
    assert len(urls) == len(set(urls)), f"a URL has two records: {urls}"
    return {r["url"]: r for r in found}


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (from /proc), so a test signals only its own."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def owner_of_connection(local_port: int, root: int) -> int:
    """The process below ``root`` holding the loopback TCP socket bound to ``local_port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == local_port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    raise AssertionError(f"no process below {root} holds a connection from port {local_port}")
