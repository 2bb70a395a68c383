"""``python -m procpool``: the same as the ``procpool`` command."""

from __future__ import annotations

from procpool._cli import main

if __name__ == "__main__":  # spawn and forkserver workers import this as __mp_main__
    raise SystemExit(main())
