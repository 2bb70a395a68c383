"""The tutorial's crawler runs on procpool with only its import changed.

Its two variants (a callback in the parent recording ``url:… size:…`` as each page
arrives; waiting for all, then collecting) are kept verbatim in tests/cli/fetch/tutorial/;
the test changes the import, points the URL list at the local web server, and runs them.
``requests`` is not installed here: tutorial/requests.py stands in for ``requests.get``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from fetch_webserver import WebServer

TUTORIAL = Path(__file__).parent / "tutorial"
SIZES = (100, 2000, 5, 70000, 1)


def _script(name: str, urls: list[str]) -> str:
    code = (TUTORIAL / name).read_text(encoding="utf-8")
    assert "from  multiprocessing import Pool" in code
    code = code.replace("from  multiprocessing import Pool", "from procpool import Pool")
    return re.sub(r"urls = \[.*?\]", f"urls = {urls!r}", code, count=1, flags=re.S)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TUTORIAL), os.environ.get("PYTHONPATH", "")])
    )
    (cwd / "crawler.py").write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, "crawler.py"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def _expected(server: WebServer) -> dict[str, int]:
    return {server.url(f"/size/{n}", host=1 + i % 4): n for i, n in enumerate(SIZES)}


def test_callback_variant_records_each_page_in_the_parent(
    server: WebServer, tmp_path: Path
) -> None:
    expected = _expected(server)
    done = _run(_script("crawler_callback.txt", list(expected)), tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "db.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"url:{u} size:{n}" for u, n in expected.items())
    parent = re.search(r"主 (\d+)", done.stdout)
    assert parent is not None
    parsers = set(re.findall(r"<(\d+)> parse", done.stdout))
    assert parsers == {parent.group(1)}  # every callback ran in the main process
    assert parent.group(1) not in set(re.findall(r"<(\d+)> is getting", done.stdout))


def test_collect_variant_returns_pages_in_order(server: WebServer, tmp_path: Path) -> None:
    expected = _expected(server)
    done = _run(_script("crawler_collect.txt", list(expected)), tmp_path)
    assert done.returncode == 0, done.stderr
    pages = ast.literal_eval(done.stdout.splitlines()[-1])
    assert [(p["url"], len(p["text"])) for p in pages] == list(expected.items())


def test_bundled_example(server: WebServer, tmp_path: Path) -> None:
    expected = _expected(server)
    done = subprocess.run([sys.executable, "-m", "procpool.examples.crawler", *expected],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "db.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"url:{u} size:{n}" for u, n in expected.items())
