"""Task functions and crash objects for the Executor and asyncio tests.

Workers import this module by name (under spawn and forkserver a function pickles by
reference), so it imports only the standard library.

Synchronization without sleeping, and without objects that only pickle while a process
is being spawned: a call that must block *checks in* over a loopback TCP connection to
the test's ``Hub`` (plain data: an address), sends its pid, and waits for one byte. The
test learns that the call is running (and in which worker), releases it by sending a
byte, and sees the worker's death as end-of-file on that connection.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

#: Only a deadlock detector: a checked-in call gives up after this long.
DEADLOCK_SECONDS = 30.0

_init_value: Any = None


# The basic tasks are shared with the Pool tests.
from compat_funcs import CustomError, add, fail_on_three, pid_of, square  # noqa: E402, F401


def raise_custom(message: str) -> None:
    raise CustomError(message)


def check_in(address: tuple[str, int], value: object = None) -> object:
    """Tell the test's Hub this call runs (sending the pid), wait to be released."""
    with socket.create_connection(address, timeout=DEADLOCK_SECONDS) as conn:
        conn.sendall(b"%d\n" % os.getpid())
        conn.recv(1)
    return value


def set_init_value(value: object) -> None:
    """An initializer: keep ``value`` in this worker."""
    global _init_value
    _init_value = value


def init_value(_: object = None) -> object:
    return _init_value


def fail_init() -> None:
    raise CustomError("the initializer failed")


def die_unless_marked(path: str) -> str:
    """Exit abruptly the first time (leaving a mark at ``path``), succeed the next."""
    if not os.path.exists(path):
        with open(path, "w"):
            pass
        os._exit(7)
    return "second attempt"


# -- the crash matrix: what happens, and where


def _raise_on_unpickle(message: str) -> None:
    raise CustomError(message)


def _exit_now(code: int) -> None:
    os._exit(code)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Crash:
    """Misbehaves when pickled or unpickled, at the stage and in the way asked.

    ``stage`` is "pickle" or "unpickle"; ``how`` is "raise", "exit" (``os._exit(3)``)
    or "kill" (SIGKILL). Outside its stage it pickles as a harmless marker.
    """

    def __init__(self, stage: str, how: str) -> None:
        self.stage = stage
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        if self.stage == "pickle":
            _misbehave(self.how, f"Crash.__reduce__ refused to pickle ({self.how})")
            return (str, ("pickled",))
        if self.how == "raise":
            return (_raise_on_unpickle, ("Crash refused to unpickle",))
        if self.how == "exit":
            return (_exit_now, (3,))
        return (_kill_self, ())


def _misbehave(how: str, message: str) -> None:
    if how == "raise":
        raise CustomError(message)
    if how == "exit":
        _exit_now(3)
    _kill_self()


def run_crash(how: str) -> None:
    """Misbehave while running."""
    _misbehave(how, f"run_crash raised ({how})")


def return_crash(stage: str, how: str) -> Crash:
    """Return a result that misbehaves when pickled (here) or unpickled (in the parent)."""
    return Crash(stage, how)


def take(_: object) -> str:
    """Accept any argument (the call's own pickling is what is tested)."""
    return "ran"


# -- the test's side of check_in (used in the test process only)


class CheckIn:
    """One checked-in call: the worker's pid and the connection it waits on."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid

    def release(self) -> None:
        try:
            self.conn.sendall(b"x")
        except OSError:
            pass  # the worker is already gone

    def wait_gone(self) -> bool:
        """Block until the worker holding this call has died; False if it answered."""
        try:
            return self.conn.recv(1) == b""
        except ConnectionResetError:
            return True


class Hub:
    """Where ``check_in`` calls report. ``arrive()`` blocks until the next one runs."""

    def __init__(self, timeout: float = DEADLOCK_SECONDS) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(timeout)
        self.timeout = timeout
        self.address: tuple[str, int] = self.server.getsockname()
        self.arrived: list[CheckIn] = []

    def arrive(self) -> CheckIn:
        conn, _ = self.server.accept()
        conn.settimeout(self.timeout)
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(32)
            if not chunk:
                raise ConnectionError("a checked-in call died before sending its pid")
            line += chunk
        arrival = CheckIn(conn, int(line))
        self.arrived.append(arrival)
        return arrival

    def release_all(self) -> None:
        for arrival in self.arrived:
            arrival.release()

    def close(self) -> None:
        """Release every call that checked in and stop listening (later calls fail).

        ``shutdown`` before ``close``: workers forked after a socket was opened hold
        copies of it, and only a shutdown reaches the peer whatever copies remain.
        """
        self.release_all()
        for sock in [arrival.conn for arrival in self.arrived] + [self.server]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more
            sock.close()
