"""Helpers for the fetch tests: run the command, read its records."""

from __future__ import annotations

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
