"""``procpool serve``, ``client`` and ``loadgen``: the tutorial's pooled TCP line server,
its client, and a load generator to measure it.

``command`` parses ``serve``'s arguments and makes the listening socket; then either
``supervisor`` forks prefork ``worker`` processes (``board`` is their shared page), or
``dispatch`` runs the tutorial's accept-and-submit model on a procpool Pool. Both
serve each connection with ``connection.converse`` and a ``handlers.Handler``.
"""

from __future__ import annotations

from typing import Any

from procpool._cli.serve.client import add_client
from procpool._cli.serve.command import add_serve, cmd_serve
from procpool._cli.serve.loadgen import add_loadgen


def register(subparsers: Any) -> None:
    """Add ``serve``, ``client`` and ``loadgen`` to the ``procpool`` command."""
    add_serve(subparsers, cmd_serve)
    add_client(subparsers)
    add_loadgen(subparsers)
