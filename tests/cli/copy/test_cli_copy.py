"""`procpool copy` end to end: every generated tree, reruns, resume, errors, disk full.

The CLI runs as a subprocess (with a timeout), except where a worker must fail on
purpose: those runs call the command in-process with ``runner.Workers`` holding a
failing task function (tests/cli/copy/copy_faults.py). After every copy the whole
tree is compared with its source (copy_trees.differences), content and metadata.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from copy_faults import disk_full, killed_once
from copy_trees import KIB, MIB, TREES, big_file, differences, edge_cases, many_small

from procpool._cli import build_parser
from procpool._cli.copy.command import cmd_copy
from procpool._cli.copy.runner import Workers

TIMEOUT = 60.0
CHUNK = 64 * KIB
FAST = ("-a", "-j2", "--chunk-size", str(CHUNK), "--chunk-cutoff", str(CHUNK))


def cli(*args: object, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "procpool", "copy", *map(str, args)],
        capture_output=True, text=True, errors="backslashreplace", timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def stats_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    start = result.stdout.index("{")
    data: dict[str, Any] = json.loads(result.stdout[start:])
    return data


def in_process(*args: object, workers: Workers) -> int:
    parsed = build_parser().parse_args(["copy", *map(str, args)])
    return cmd_copy(parsed, workers)


@pytest.mark.parametrize("kind", sorted(TREES))
def test_every_tree_is_copied_exactly_and_a_rerun_copies_nothing(tmp_path: Path, kind: str) -> None:
    src = TREES[kind](tmp_path / "src")
    first = cli(*FAST, "--verify", "--stats-json", "-", "-T", src, tmp_path / "dst")
    assert first.returncode == 0, first.stderr
    assert differences(src, tmp_path / "dst") == []
    stats = stats_of(first)
    assert stats["errors"] == stats["mismatches"] == 0
    assert stats["verified"] >= stats["files_copied"] > 0
    again = cli(*FAST, "--stats-json", "-", "-T", src, tmp_path / "dst")
    assert again.returncode == 0, again.stderr
    assert stats_of(again)["files_copied"] == 0
    assert stats_of(again)["files_unchanged"] == stats["files_total"]
    assert differences(src, tmp_path / "dst") == []


def test_sparse_file_keeps_its_holes(tmp_path: Path) -> None:
    src = TREES["sparse"](tmp_path / "src")
    result = cli(*FAST, "--stats-json", "-", "-T", src, tmp_path / "dst")
    assert result.returncode == 0, result.stderr
    copied = (tmp_path / "dst" / "sparse.img").stat()
    assert copied.st_blocks * 512 < copied.st_size // 4
    assert stats_of(result)["bytes_copied"] < copied.st_size // 4


def test_recursive_copy_follows_cp_rules(tmp_path: Path) -> None:
    src = many_small(tmp_path / "src", count=30)
    (tmp_path / "into").mkdir()
    assert cli("-r", src, tmp_path / "into").returncode == 0
    assert differences(src, tmp_path / "into" / "src", metadata=False) == []
    one = cli(src / "d00" / "e0" / "f00000.txt", tmp_path / "single.txt")
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "single.txt").read_bytes() == (src / "d00/e0/f00000.txt").read_bytes()
    refused = cli(src, tmp_path / "nope")
    assert refused.returncode == 1 and "without -r" in refused.stderr
    assert not (tmp_path / "nope").exists()


def test_checksum_finds_changed_content_that_size_and_mtime_miss(tmp_path: Path) -> None:
    src = many_small(tmp_path / "src", count=20)
    dst = tmp_path / "dst"
    assert cli(*FAST, "-T", src, dst).returncode == 0
    victim = dst / "d01" / "e1" / "f00001.txt"
    st = victim.stat()
    victim.write_bytes(bytes(b ^ 0xFF for b in victim.read_bytes()))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cli(*FAST, "-T", src, dst).returncode == 0
    assert differences(src, dst) == [f"{b'd01/e1/f00001.txt'!r}: content"]
    result = cli(*FAST, "--checksum", "--stats-json", "-", "-T", src, dst)
    assert stats_of(result)["files_copied"] == 1
    assert differences(src, dst) == []


def test_dry_run_changes_nothing_and_lists_the_work(tmp_path: Path) -> None:
    src = edge_cases(tmp_path / "src", chunk=CHUNK)
    result = cli(*FAST, "--dry-run", "-T", src, tmp_path / "dst")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "dst").exists()
    assert f"copy {src}/size_1 -> {tmp_path}/dst/size_1" in result.stdout
    assert "mkfifo" in result.stdout and "link " in result.stdout


def test_exclude_and_include_rules_in_order(tmp_path: Path) -> None:
    src = many_small(tmp_path / "src", count=30)
    result = cli("-a", "--include", "f00003.txt", "--exclude", "*.txt", "--exclude", "d01",
                 "-T", src, tmp_path / "dst")  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert files == ["f00003.txt"]
    assert not (tmp_path / "dst" / "d01").exists()


def test_refused_sources_are_reported_and_the_rest_copied(tmp_path: Path) -> None:
    src = many_small(tmp_path / "src", count=5)
    (tmp_path / "out").mkdir()
    (tmp_path / "loop").symlink_to("loop")
    result = cli("-a", src, tmp_path / "missing", tmp_path / "out")
    assert result.returncode == 1
    assert "missing: cannot stat: No such file or directory (ENOENT)" in result.stderr
    assert differences(src, tmp_path / "out" / "src") == []
    inside = cli("-a", "-T", src, src / "d00" / "copy")
    assert inside.returncode == 1 and "into itself" in inside.stderr
    same = cli("-a", "-T", src, src)
    assert same.returncode == 1 and "same file" in same.stderr
    loop = cli(tmp_path / "loop", tmp_path / "out" / "x")
    assert loop.returncode == 1 and "ELOOP" in loop.stderr


@pytest.mark.parametrize(
    "args", [["only-one"], ["-j", "0", "a", "b"], ["--chunk-size", "12", "a", "b"]]
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "procpool copy: error:" in result.stderr


def test_unreadable_file_is_reported_and_the_rest_copied(tmp_path: Path) -> None:
    # Root reads any file: as root the copy runs without the capabilities that let it
    # (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH): a real EACCES.
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root needs setpriv to drop CAP_DAC_OVERRIDE for this test")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    src, dst = many_small(tmp_path / "src", count=10), tmp_path / "dst"
    secret = src / "d02" / "e2" / "secret"
    secret.write_bytes(b"no")
    secret.chmod(0o000)
    result = cli("-r", "-T", src, dst, prefix=prefix)
    assert result.returncode == 1
    assert "secret: cannot open: Permission denied (EACCES)" in result.stderr
    assert not (dst / "d02" / "e2" / "secret").exists()
    assert not list(dst.rglob(".*procpool*"))
    assert len([p for p in dst.rglob("*") if p.is_file()]) == 10


def _read_lines_until(stream: Any, needle: str, count: int) -> int:
    seen = 0
    for line in stream:
        if needle in line:
            seen += 1
            if seen == count:
                return seen
    return seen


def test_resume_after_sigkill_copies_only_missing_chunks(tmp_path: Path) -> None:
    size, chunk = 4 * MIB, 128 * KIB
    src = big_file(tmp_path / "src", size=size)
    dst = tmp_path / "dst"
    args = ["-a", "-j1", "--chunk-size", chunk, "-v", "--bwlimit", "4M", "-T", src, dst]
    proc = subprocess.Popen([sys.executable, "-m", "procpool", "copy", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert _read_lines_until(proc.stdout, "chunk ", 16) == 16
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its workers, mid-copy
    finally:
        proc.wait(TIMEOUT)
        if proc.stdout:
            proc.stdout.close()
    journal = dst / ".big.bin.procpool.journal"
    done = len(journal.read_text().splitlines()) - 1
    assert 16 <= done < size // chunk, "killed after the copy finished: slow the --bwlimit"
    assert not (dst / "big.bin").exists()
    resumed = cli("-a", "-j2", "--chunk-size", chunk, "--stats-json", "-", "-T", src, dst)
    assert resumed.returncode == 0, resumed.stderr
    stats = stats_of(resumed)
    assert stats["bytes_resumed"] == done * chunk
    assert stats["bytes_copied"] == size - done * chunk <= 0.6 * size
    assert differences(src, dst) == []
    assert not journal.exists()


def test_a_worker_killed_mid_chunk_is_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = big_file(tmp_path / "src", size=1 * MIB)
    work = Workers(2, copy_chunk=functools.partial(killed_once, str(tmp_path / "marker")))
    assert in_process(*FAST, "-T", src, tmp_path / "dst", workers=work) == 0
    assert (tmp_path / "marker").exists()
    assert differences(src, tmp_path / "dst") == []


def test_injected_disk_full_removes_the_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = big_file(tmp_path / "src", size=1 * MIB)
    many_small(src / "small", count=5)
    work = Workers(2, copy_chunk=functools.partial(disk_full, str(tmp_path / "marker")))
    assert in_process(*FAST, "-T", src, tmp_path / "dst", workers=work) == 1
    assert "big.bin: No space left on device (ENOSPC)" in capsys.readouterr().err
    assert not (tmp_path / "dst" / "big.bin").exists()
    assert not list((tmp_path / "dst").glob(".*procpool*"))
    assert differences(src / "small", tmp_path / "dst" / "small") == []


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, timeout=TIMEOUT)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=TIMEOUT)


def test_real_disk_full_on_a_small_tmpfs(tmp_path: Path) -> None:
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    src = big_file(tmp_path / "src", size=3 * MIB)
    many_small(src / "small", count=5, max_size=KIB)
    dst = tmp_path / "full"
    with small_tmpfs(dst, "1m"):
        result = cli(*FAST, src / "big.bin", src / "small", dst)
        assert result.returncode == 1
        assert "No space left on device (ENOSPC)" in result.stderr
        assert not (dst / "big.bin").exists()
        assert not list(dst.glob(".*procpool*"))
        # The small files copied while the big one filled the disk failed too (and
        # are reported); those copied are whole.
        for path in (src / "small").rglob("*.txt"):
            copy = dst / path.relative_to(src)
            if copy.exists():
                assert copy.read_bytes() == path.read_bytes()
            else:
                assert f"{copy}: No space left on device (ENOSPC)" in result.stderr
