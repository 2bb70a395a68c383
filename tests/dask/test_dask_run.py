"""``procpool run --backend dask``: runs on a cluster, stores and resumes as the
local run does. The CLI runs as a subprocess, pointed at this module's scheduler."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any


def _cli(*args: object, cwd: Path) -> Any:
    import importlib.util

    path = Path(__file__).parent.parent / "cli" / "run" / "test_cli_run.py"
    spec = importlib.util.spec_from_file_location("_dask_cli_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli(*args, cwd=cwd)


def test_run_on_a_scheduler_completes_and_resumes(process_client: Any, tmp_path: Path) -> None:
    address = process_client.scheduler.address
    run = ("run", "cli_funcs:square", "--range", 50, "--backend", "dask", "--address", address,
           "-j", 2, "--progress", "never")  # fmt: skip
    first = _cli(*run, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "50 done, 0 failed" in first.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "procpool-run.sqlite")) as db:
        rows = db.execute("SELECT COUNT(*) FROM results WHERE status = 'done'").fetchone()
    assert rows == (50,)
    again = _cli(*run, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stderr


def test_address_needs_the_dask_backend(tmp_path: Path) -> None:
    done = _cli("run", "cli_funcs:square", "--range", 3, "--address", "tcp://127.0.0.1:1",
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--address needs --backend dask" in done.stderr
