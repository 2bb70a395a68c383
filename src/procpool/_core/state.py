"""The life cycle of a pool."""

from __future__ import annotations

import enum


class State(enum.Enum):
    RUNNING = "running"
    CLOSING = "closing"
    TERMINATING = "terminating"
    BROKEN = "broken"
