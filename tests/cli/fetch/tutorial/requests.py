"""A stand-in for ``requests.get`` (not installed here) on httpx, for the tutorial's code."""

from __future__ import annotations

import httpx


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)
