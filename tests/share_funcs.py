"""Task functions for tests/api/test_share.py and tests/api/test_manager.py (importable
by workers under every start method)."""

from __future__ import annotations

import os
from typing import Any


def describe(obj: Any, path: str = "") -> tuple[int, int, Any]:
    """(this worker's pid, the id of the object it got, the value at ``path``)."""
    value = obj
    for key in path.split("/") if path else ():
        value = value[int(key) if key.isdigit() else key]
    return os.getpid(), id(obj), value


def nested(args: dict[str, Any]) -> tuple[int, int, Any]:
    """The handle inside a dict inside a list: the task still gets the object."""
    return describe(args["items"][0], "table/3")


def array_info(arr: Any, index: int) -> tuple[float, bool, str]:
    """An element, whether the array is writeable, and what writing to it does."""
    try:
        arr[index] = -1.0
        wrote = "wrote"
    except ValueError as exc:
        wrote = str(exc)
    return float(arr[index]), bool(arr.flags.writeable), wrote


def die_after_reading(obj: Any) -> None:
    """Read the shared object, then die as a crash would."""
    len(obj)
    os._exit(3)


def call(fn: Any, value: int) -> Any:
    return fn(value)


# -- Manager proxies (the tutorial's examples)


def add_under_lock(counter: Any, lock: Any, times: int) -> int:
    """A shared counter, incremented under a shared lock."""
    for _ in range(times):
        with lock:
            counter.value += 1
    return os.getpid()


def fill(shared: Any, key: int) -> int:
    """Each task writes its square into a shared dict."""
    shared[key] = key * key
    return key


def record(namespace: Any, items: Any, messages: Any, i: int) -> None:
    items.append(i)
    messages.put(("done", i))
    namespace.last = i


def objects_held(obj: Any) -> int:
    """How many shared objects this worker holds (after attaching ``obj``)."""
    from procpool._api import share

    return len(share._attached)
