"""``import procpool`` never imports Dask; ``procpool.dask`` without it says what to
install. Each in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

NO_DASK = """
import sys
import procpool
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))
assert not loaded, loaded
"""

WITHOUT_THE_EXTRA = """
import sys
sys.modules['distributed'] = None  # as if the extra were not installed
try:
    import procpool.dask
except ImportError as exc:
    print(exc)
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return done.stdout


def test_import_procpool_never_imports_dask() -> None:
    _run(NO_DASK)


def test_procpool_dask_without_the_extra_says_what_to_install() -> None:
    assert "pip install 'procpool[dask]'" in _run(WITHOUT_THE_EXTRA)
