"""What runs on a Dask worker: one procpool call, and the pool's initializer.

A call travels as the same payload the local engine sends down a worker's pipe
(:func:`procpool._worker.serialize.call_payload`): the function's pickle, then
``(mode, data, kwargs)``. :func:`run` answers it as the local worker does, as
``(ok, blob)`` where ``blob`` is the result's pickle or the exception's
:class:`~procpool._worker.wire.ErrorReport` (its traceback text, and its name and
message when the exception itself cannot be pickled): so a task's exception never
reaches Dask as an error. Dask's own errors are left for what only Dask sees: a call
that could not be sent, a worker that died (``KilledWorker``), a cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import distributed

from procpool._core.errors import SerializationError
from procpool._worker import serialize
from procpool._worker.main import call

Answer = tuple[bool, bytes]

# Payloads start with the function's pickle: one unpickled per worker process and
# function, as the local worker's cache does.
_functions: dict[bytes, Callable[..., Any]] = {}


def run(call_data: bytes | tuple[bytes, Any], items: bool) -> Answer | list[Answer]:
    """Run one call; ``items``: a batch of an imap's one-item chunks, each answered
    on its own (an item that raises fails alone, as on the local engine).

    ``call_data`` is a payload, or ``(function pickle, (mode, data, kwargs))`` for a
    call whose large buffers Dask carries itself (see DaskBackend).
    """
    try:
        if isinstance(call_data, tuple):
            fn_blob, (mode, data, kwargs) = call_data
        else:
            fn_blob, (mode, data, kwargs) = serialize.split_call(call_data)
        fn = _functions.get(fn_blob)
        if fn is None:
            fn = _functions[fn_blob] = serialize.loads(fn_blob)
    except BaseException as exc:
        err = SerializationError("unpickle task", f"{type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return (False, serialize.error_report(err))
    if items:
        return [answer(fn, mode, [item], kwargs) for item in data]
    return answer(fn, mode, data, kwargs)


def answer(fn: Callable[..., Any], mode: int, data: Any, kwargs: dict[str, Any]) -> Answer:
    """``fn``'s outcome for one call, pickled as the local worker sends it."""
    try:
        value = call(fn, mode, data, kwargs)
    except BaseException as exc:  # SystemExit too: that call's error, as locally
        return (False, serialize.error_report(exc))
    try:
        return (True, serialize.dumps(value))
    except BaseException as exc:
        exc.add_note(
            f"procpool: the result of {serialize.describe(fn)} "
            f"({type(value).__name__} object) could not be pickled"
        )
        return (False, serialize.error_report(exc, unsent=value))


class Initializer(distributed.WorkerPlugin):
    """A Dask worker plugin that runs ``initializer(*initargs)`` on every worker,
    those that join later (a replacement after a crash) included.

    Dask pickles the plugin with cloudpickle, so the initializer may be a lambda.
    ``name`` is the pool's own: two pools on one cluster keep their own initializers.
    """

    def __init__(
        self, name: str, initializer: Callable[..., object], initargs: Iterable[Any]
    ) -> None:
        self.name = name
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def setup(self, worker: Any) -> None:
        self.initializer(*self.initargs)
