"""Module-level task functions for the compatibility and tutorial tests.

Workers import this module by name (under spawn and forkserver a task function is
pickled by reference), so it imports nothing but the standard library: keep it cheap.
Synchronization objects arrive as arguments (``multiprocessing.Manager`` proxies,
which pickle under every start method); nothing here sleeps to synchronize.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

#: How long a task waits for an event or barrier the test controls. Only a deadlock
#: detector: the test sets the event long before this runs out.
DEADLOCK_SECONDS = 30.0

_init_calls = 0
_init_arg: Any = None


class CustomError(Exception):
    """An exception type of our own, to check that workers' errors keep their type."""


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def pid_of(_: object = None) -> int:
    return os.getpid()


def fail_on_three(x: int) -> int:
    """``x * x``, except for 3, which raises ValueError."""
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def raise_error(kind: type[BaseException], message: str) -> None:
    raise kind(message)


def raise_in_named_function() -> None:
    """Raise from a function whose name the remote traceback must show."""
    raise CustomError("raised in the worker")


def wait_event(event: Any, value: object = "released") -> object:
    """Block until the test sets ``event``; return ``value``."""
    if not event.wait(DEADLOCK_SECONDS):
        raise TimeoutError("the test never set the event")
    return value


def set_event(event: Any, value: object = "setter") -> object:
    event.set()
    return value


def imap_gate(args: tuple[int, Any, Any]) -> int:
    """For imap ordering: item 0 waits for ``release``; item 1 sets ``done`` first."""
    x, release, done = args
    if x == 0:
        wait_event(release)
    elif x == 1:
        done.set()
    return x * x


def barrier_pid(barrier: Any) -> int:
    """Meet the other tasks at ``barrier`` (they must all run at once); return the pid."""
    barrier.wait(DEADLOCK_SECONDS)
    return os.getpid()


def started_then_wait(started: Any, release: Any) -> int:
    started.set()
    wait_event(release)
    return os.getpid()


def record_init(arg: object) -> None:
    """A pool initializer: count its calls and keep its argument, in this worker."""
    global _init_calls, _init_arg
    _init_calls += 1
    _init_arg = arg


def init_report(_: object = None) -> tuple[int, int, object]:
    """(pid, how many times this worker's initializer ran, the argument it got)."""
    return os.getpid(), _init_calls, _init_arg


def use_inherited(_: object = None) -> bool:
    """Set the Event an initializer received, holding the Lock it received with it."""
    event, lock = _init_arg
    with lock:
        event.set()
    return True


def fail_at_3000(x: int) -> int:
    """``x``, except for 3000, which raises ValueError (an error deep into a long imap)."""
    if x == 3000:
        raise ValueError("3000 is not allowed")
    return x


def _slow_rebuild(value: object) -> object:
    time.sleep(0.5)  # stands for a slow unpickle: a Manager proxy connecting, say
    return value


class SlowToUnpickle:
    """An argument that takes half a second to unpickle in the worker."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_slow_rebuild, (None,))


def hold(release: Any, _: object = None) -> object:
    """Block until ``release`` is set (the second argument only rides along)."""
    return wait_event(release)


def make_bytes(size: int) -> bytes:
    return b"x" * size


def length(data: bytes) -> int:
    return len(data)


def make_adder(n: int) -> Callable[[int], int]:
    """A function made in the task: it can only travel back by value (cloudpickle)."""

    def add_n(x: int) -> int:
        return x + n

    return add_n


def types_and_value(*args: object, **kwargs: object) -> tuple[object, ...]:
    """What a call received, with the exact type of each argument."""
    received = [*args, *kwargs.values()]
    return tuple((type(x).__name__, x) for x in received)


def identity(x: object) -> object:
    return x


def write_unless_failing(args: tuple[str, int, int]) -> int:
    """Write the file ``<directory>/<i>``, or raise CustomError when ``i == fail``."""
    directory, i, fail = args
    if i == fail:
        raise CustomError(f"item {i} failed")
    with open(os.path.join(directory, str(i)), "w") as f:
        f.write(str(i))
    return i
