"""The fetch tests' fixtures: the local web server (one per test session, emptied before
each test) (helpers are in fetch_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fetch_webserver import WebServer


@pytest.fixture(scope="session")
def _server_session() -> Iterator[WebServer]:
    server = WebServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(_server_session: WebServer) -> WebServer:
    _server_session.reset()
    return _server_session
