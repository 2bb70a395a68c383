"""`procpool scan` against wc -l, grep -c and grep on the same files.

Files are seeded random lines, with what trips range splitting: empty lines, a line
longer than the block size, a last line without its newline, a file with no newline.
Block sizes are small so that a file of a few hundred KB is cut into many ranges.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 60.0
WORDS = [b"alpha", b"beta", b"gamma", b"ERROR", b"error", b"x" * 40, b"", b"caf\xe9"]


def scan(*args: object) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "procpool", "scan", *map(str, args)]
    return subprocess.run(command, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def tool(*args: object) -> bytes:
    return subprocess.run(list(map(str, args)), capture_output=True, timeout=TIMEOUT).stdout


def make_file(path: Path, seed: int, trailing_newline: bool) -> Path:
    rng = random.Random(seed)
    lines = [b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 12)))
             for _ in range(6000)]  # fmt: skip
    lines[rng.randrange(len(lines))] = b"error " + b"y" * 20000  # longer than a block
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    return path


@pytest.fixture(params=[True, False], ids=["newline-at-end", "no-newline-at-end"])
def text_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    return make_file(tmp_path / "log.txt", 7, request.param)


@pytest.mark.parametrize("block", ["1000", "7777", "16M"])
def test_counts_and_lines_equal_wc_and_grep(text_file: Path, block: str) -> None:
    wc = int(tool("wc", "-l", text_file).split()[0])
    lines = scan("--count-lines", "-j2", "--block-size", block, text_file)
    assert lines.returncode == 0, lines.stderr
    assert int(lines.stdout) == wc
    for pattern in ("error", "^$", "gam+a b"):
        grep_c = int(tool("grep", "-c", "-E", pattern, text_file) or b"0")
        counted = scan("--grep", pattern, "--count", "-j2", "--block-size", block, text_file)
        assert int(counted.stdout) == grep_c, pattern
        matched = scan("--grep", pattern, "-j2", "--block-size", block, text_file)
        assert matched.stdout == tool("grep", "-a", "-E", pattern, text_file), pattern


def test_ignore_case_and_json(text_file: Path) -> None:
    result = scan("--grep", "error", "-i", "--count", "--json", "--block-size", "3000", text_file)
    assert json.loads(result.stdout) == {
        "matching_lines": int(tool("grep", "-c", "-i", "error", text_file))
    }
    lines = scan("--count-lines", "--json", "-j1", text_file)
    assert json.loads(lines.stdout) == {"lines": int(tool("wc", "-l", text_file).split()[0])}


def test_file_without_any_newline_and_empty_file(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.write_bytes(b"error" * 1000)
    assert scan("--grep", "error", "--count", "--block-size", "100", one).stdout == b"1\n"
    assert scan("--count-lines", one).stdout == b"0\n"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert scan("--count-lines", empty).stdout == b"0\n"
    assert scan("--grep", "x", empty).stdout == b""


def test_chunk_hashes_are_blake2_of_each_block(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(300_001)
    path = tmp_path / "blob"
    path.write_bytes(data)
    result = scan("--chunk-hashes", "--json", "-j2", "--block-size", "64K", path)
    manifest = json.loads(result.stdout)
    expected = [hashlib.blake2b(data[o : o + 65536], digest_size=32).hexdigest()
                for o in range(0, len(data), 65536)]  # fmt: skip
    assert [c["digest"] for c in manifest["chunks"]] == expected
    assert sum(c["length"] for c in manifest["chunks"]) == len(data)
    root = hashlib.blake2b(b"".join(bytes.fromhex(d) for d in expected), digest_size=32)
    assert manifest["root"] == root.hexdigest()
    text = scan("--chunk-hashes", "--block-size", "64K", path).stdout.decode()
    assert "cannot" not in text and expected[0] in text
    assert b"cannot be split" in scan("--help").stdout


@pytest.mark.parametrize(("args", "status", "message"), [
    (["--count-lines", "missing"], 1, b"cannot read 'missing'"),
    (["--grep", "(", "FILE"], 2, b"not a valid Python regular expression"),
    (["--count-lines", "-j", "0", "FILE"], 2, b"--jobs must be at least 1"),
    (["--count-lines", "--count", "FILE"], 2, b"go with --grep"),
    (["--count-lines", "DIR"], 2, b"is not a regular file"),
    (["FILE"], 2, b"one of the arguments"),
])  # fmt: skip
def test_bad_input(tmp_path: Path, args: list[str], status: int, message: bytes) -> None:
    (tmp_path / "f").write_bytes(b"a\n")
    args = [str(tmp_path / "f") if a == "FILE" else str(tmp_path) if a == "DIR" else a
            for a in args]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "procpool", "scan", *args], cwd=tmp_path,
                            capture_output=True, timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == status
    assert message in result.stderr


def test_vectorized_and_scalar_newline_counts_agree(tmp_path: Path) -> None:
    from procpool._cli.scan import ranges

    path = make_file(tmp_path / "big.txt", 11, False)
    path.write_bytes(path.read_bytes() * 20)  # several 1 MiB buffers, and a partial one
    data = path.read_bytes()
    cuts = [
        (0, len(data)),
        (1, len(data) - 1),
        (1000, 1000 + 3 * 2**20 + 5),
        (len(data) - 1, len(data)),
        (5, 5),
    ]
    for start, end in cuts:
        scalar = ranges.count_newlines(ranges.ScanJob(str(path), start, end, len(data)))
        vector = ranges.count_newlines(ranges.ScanJob(str(path), start, end, ranges._VECTOR_MIN))
        assert scalar == vector == data[start:end].count(b"\n"), (start, end)
    assert set(ranges._counters) == {False, True}  # both ways were taken
