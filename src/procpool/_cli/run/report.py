"""Output of ``procpool results`` (table, JSON lines, CSV) and ``procpool status``."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any, TextIO

from procpool._cli.run.database import RESULT_COLUMNS, RunDB, run_is_alive
from procpool._cli.run.progress import duration, shorten

_TABLE_INPUT = 28
_TABLE_OUTCOME = 60


def write_results(db: RunDB, fmt: str, failed_only: bool, out: TextIO) -> None:
    """Write the stored rows, in line order, as ``table``, ``jsonl`` or ``csv``."""
    rows = db.results(failed_only)
    if fmt == "jsonl":
        _write_jsonl(rows, out)
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(RESULT_COLUMNS)
        writer.writerows(tuple(row) for row in rows)
    else:
        _write_table(rows, out)
    out.flush()


def _write_jsonl(rows: Iterable[sqlite3.Row], out: TextIO) -> None:
    for row in rows:
        record: dict[str, Any] = dict(zip(RESULT_COLUMNS, row, strict=True))
        if record["result_format"] == "json" and record["result"] is not None:
            record["result"] = json.loads(record["result"])
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_table(rows: Iterable[sqlite3.Row], out: TextIO) -> None:
    header = f"{'line':>7}  {'status':<6}  {'tries':>5}  {'seconds':>8}  "
    out.write(header + f"{'input':<{_TABLE_INPUT}}  result or error\n")
    for row in rows:
        if row["status"] == "done":
            outcome = row["result"] or ""
        else:
            outcome = f"{row['error_type']}: {row['error_message']}"
        seconds = "" if row["duration"] is None else f"{row['duration']:.4f}"
        out.write(
            f"{row['line']:>7}  {row['status']:<6}  {row['attempts']:>5}  {seconds:>8}  "
            f"{shorten(row['input'], _TABLE_INPUT):<{_TABLE_INPUT}}  "
            f"{shorten(outcome, _TABLE_OUTCOME)}\n"
        )


def status_lines(db: RunDB) -> list[str]:
    """A summary of the latest run: what, its state, what is stored, rate and ETA."""
    lines = [f"database: {os.path.abspath(db.path)}"]
    run = db.latest_run()
    if run is None:
        return [*lines, "no run recorded yet"]
    options = json.loads(run["options"])
    lines.append(
        f"run {run['id']}: {run['target']} on {run['input']}"
        + (" (--json)" if options.get("json") else "")
    )
    lines.append(f"state: {_state(run)}")
    done, failed = db.counts()
    total = run["total"]
    stored = f"stored: {done:,} done, {failed:,} failed"
    if total is not None:
        stored += f", {max(0, total - done - failed):,} to do (of {total:,} inputs)"
    lines.append(stored)
    lines.append(_this_run(run))
    return lines


def _state(run: sqlite3.Row) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started_at"]))
    if run_is_alive(run):
        age = duration(time.time() - run["started_at"])
        return f"running (pid {run['pid']}, started {started}, {age} ago)"
    if run["state"] == "running":
        return f"stopped without finishing (pid {run['pid']} is gone: killed?), started {started}"
    took = duration((run["ended_at"] or run["updated_at"]) - run["started_at"])
    text = f"{run['state']} after {took} (started {started})"
    if run["message"]:
        text += f": {run['message']}"
    return text


def _this_run(run: sqlite3.Row) -> str:
    ran = run["done"] + run["failed"]
    text = (
        f"this run: {run['done']:,} done, {run['failed']:,} failed, "
        f"{run['skipped']:,} found already stored"
    )
    elapsed = run["updated_at"] - run["started_at"]
    if ran and elapsed > 0:
        rate = ran / elapsed
        text += f"; {rate:,.1f}/s"
        total = run["total"]
        if run_is_alive(run) and total is not None:
            left = total - ran - run["skipped"]
            text += f", ETA {duration(max(0, left) / rate)}"
    return text
