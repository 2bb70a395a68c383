"""Functions the Dask tests run on Dask workers (importable by worker processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def die_once(marker: str, value: int) -> int:
    """Kill this worker the first time (``marker`` does not exist yet); then return
    ``value``: what Dask's retry on another worker must give back."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail_init() -> None:
    raise RuntimeError("initializer failed on purpose")
