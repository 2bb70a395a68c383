"""The tutorial's file-copy and one-file-many-readers examples, with either import.

src/procpool/examples/copy_files.py and read_file.py import ``from procpool import
Pool``; each runs as a script as it is and with that line changed to ``from
multiprocessing import Pool``, and both give the same, correct output.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import procpool.examples

EXAMPLES = Path(procpool.examples.__file__).parent
IMPORTS = {
    "procpool": "from procpool import Pool",
    "multiprocessing": "from multiprocessing import Pool",
}


def run_example(tmp_path: Path, name: str, impl: str, *args: object) -> str:
    source, count = re.subn(r"^from procpool import Pool$", IMPORTS[impl],
                            (EXAMPLES / name).read_text(), flags=re.M)  # fmt: skip
    assert count == 1
    script = tmp_path / f"{impl}_{name}"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("impl", sorted(IMPORTS))
def test_copy_files_example(tmp_path: Path, impl: str) -> None:
    rng = random.Random(9)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}").write_bytes(rng.randbytes(rng.randrange(3 << 20)))
    out = run_example(tmp_path, "copy_files.py", impl, src, tmp_path / "dst")
    assert out.endswith("copying: 100.0%\ncopied 12 files\n")
    for i in range(12):
        assert (tmp_path / "dst" / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()


@pytest.mark.parametrize("impl", sorted(IMPORTS))
def test_read_file_example(tmp_path: Path, impl: str) -> None:
    rng = random.Random(10)
    text = "".join(" ".join("w" * rng.randrange(1, 9) for _ in range(rng.randrange(8))) + "\n"
                   for _ in range(5000))  # fmt: skip
    path = tmp_path / "text"
    path.write_text(text)
    out = run_example(tmp_path, "read_file.py", impl, path)
    assert out == f"lines: {len(text.splitlines())}, words: {len(text.split())}\n"
