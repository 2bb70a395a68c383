"""Pickling for calls, results and errors.

Plain pickle (protocol 5) first, because it is fast; multiprocessing's pickler for
sockets and connections; cloudpickle when both refuse (lambdas, closures, local
classes) or when the pickle refers to a ``__main__`` that a spawned or forkserver
worker cannot import (notebooks, ``python -c``, stdin). A function's pickle is
cached, so a lambda mapped over a million items is cloudpickled once.
"""

from __future__ import annotations

import marshal
import os
import pickle
import reprlib
import struct
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from procpool._core.errors import UNSENT_RESULT, RemoteError, RemoteTraceback
from procpool._worker import shm
from procpool._worker.wire import ErrorReport

PROTOCOL = 5
_MAIN_MARK = b"__main__"
# Types that never hold a buffer worth sending out of band (see _shm) nor code: a value
# (or every argument of a call) of these needs no buffer_callback and no __main__
# check, which together cost more than the pickling itself.
PLAIN = frozenset({int, float, str, bool, type(None), complex})
# Such values (and short lists and tuples of them, and a call made of them) travel as
# marshal data: it encodes them in half the time pickle takes. A pickle (protocol 5)
# starts with this byte (PROTO); no marshal data does (its type codes are ASCII, with
# 0x80 as a flag), so loads() tells the two apart.
_PICKLE_START = 0x80

V = TypeVar("V")


#: Held while this process imports cloudpickle and while it forks a worker (see
#: Slot): a fork in the middle of that import would give a child whose import lock
#: is held forever, and which hangs when a task needs cloudpickle. Imported only when
#: a call needs it: the import costs more than starting a pool.
import_lock = threading.Lock()


def _fresh_import_lock() -> None:
    # A forked worker inherits the lock as its forking thread held it: locked.
    global import_lock
    import_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_import_lock)


def _cloudpickle_dumps(obj: object) -> bytes:
    with import_lock:
        import cloudpickle

    data: bytes = cloudpickle.dumps(obj, protocol=PROTOCOL)
    return data


def _main_is_importable() -> bool:
    """Whether a worker can import ``__main__`` by itself (a script file, ``-m``).

    Then ``__main__`` objects pickle by reference: fast, and the worker's tracebacks
    point at the real source lines. Otherwise (a notebook, ``python -c``, stdin) they
    must travel by value.
    """
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None) is not None


def dumps(obj: object, fds: list[int] | None = None) -> bytes:
    """Pickle ``obj``, falling back to cloudpickle; raises what pickle raised.

    With ``fds``, large buffers go out of band into memfds appended to it.
    """
    if type(obj) in PLAIN or _plain_items(obj):
        return marshal.dumps(obj)  # type: ignore[arg-type]  # (plain: no buffers, no code)
    try:
        if fds is None:
            data = pickle.dumps(obj, PROTOCOL)
        else:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=shm.collector(fds))
    except Exception as first:
        _drop(fds)
        return _dumps_fallback(obj, first)
    if _MAIN_MARK in data and not _main_is_importable():
        _drop(fds)
        try:
            return _cloudpickle_dumps(obj)
        except Exception:
            # By reference it still works wherever __main__ is importable (fork, scripts).
            return data
    if fds is not None and len(data) >= shm.THRESHOLD and not fds:
        # A large pickle with nothing out of band: large bytes, perhaps.
        wrapped = shm.wrap_large_bytes(obj)
        if wrapped is obj:
            return data  # no: a long list, say
        try:
            again = pickle.dumps(wrapped, PROTOCOL, buffer_callback=shm.collector(fds))
        except Exception:
            _drop(fds)
            return data
        return again if fds else data
    return data


def _drop(fds: list[int] | None) -> None:
    if fds:
        shm.close_all(fds)
        fds.clear()


def _dumps_fallback(obj: object, first: Exception) -> bytes:
    # multiprocessing's own pickler knows sockets and connections (the tutorial's
    # echo server hands an accepted socket to a worker); cloudpickle knows code.
    from multiprocessing.reduction import ForkingPickler

    try:
        return bytes(ForkingPickler.dumps(obj, PROTOCOL))
    except Exception:
        pass
    try:
        return _cloudpickle_dumps(obj)
    except Exception:
        # As the stdlib does: the pickler's own exception (TypeError: cannot pickle
        # ..., or whatever a __reduce__ raised); the caller notes what it was.
        raise first from None


class _PerFunction(Generic[V]):
    """A value computed once per function, kept while the function lives.

    The last function asked for is checked first (a loop of apply_async calls asks
    for the same one every time): a WeakKeyDictionary lookup costs a weakref per call.
    """

    def __init__(self, compute: Callable[[Any], V]) -> None:
        self._compute = compute
        self._cache: weakref.WeakKeyDictionary[Any, V] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Any], V] | None = None

    def __call__(self, fn: object) -> V:
        last = self._last
        if last is not None and last[0]() is fn:
            return last[1]
        try:
            return self._remember(fn, self._cache[fn])
        except KeyError:
            value = self._compute(fn)
            self._cache[fn] = value
            return self._remember(fn, value)
        except TypeError:  # not weak-referenceable (a builtin, a partial): no cache
            return self._compute(fn)

    def _remember(self, fn: object, value: V) -> V:
        self._last = (weakref.ref(fn), value)
        return value


def _function_info(fn: object) -> tuple[bytes, str]:
    try:
        blob = dumps(fn)
    except Exception as exc:
        exc.add_note(f"procpool: the function {_describe(fn)} could not be pickled")
        raise
    return _FN_LEN.pack(len(blob)) + blob, _describe(fn)


#: A callable's part of every call payload (its length, then its pickle) and its short
#: name, made once per function and remembered.
function_info = _PerFunction(_function_info)


def dumps_function(fn: object) -> bytes:
    """A callable's part of every call payload (see function_info)."""
    return function_info(fn)[0]


def loads(data: bytes | bytearray | memoryview) -> Any:
    """A value made by dumps(): a pickle, or marshal data for plain values."""
    return pickle.loads(data) if data[0] == _PICKLE_START else marshal.loads(data)


_FN_LEN = struct.Struct("<I")
_APPLY = 0  # (_worker.APPLY: a call's data is its positional arguments)
FN_LEN_SIZE = _FN_LEN.size


def _plain_items(obj: object) -> bool:
    """A short list or tuple of plain values (an imap's chunk of results, say)."""
    kind = type(obj)
    return (kind is list or kind is tuple) and len(obj) <= 16 and _plain(obj)  # type: ignore[arg-type]


def _plain(args: tuple[Any, ...] | list[Any]) -> bool:
    # A loop, not all(<generator>): this runs for every apply_async, and the
    # generator costs more than the check.
    for arg in args:  # noqa: SIM110
        if type(arg) not in PLAIN:
            return False
    return True


def call_payload(fn_part: bytes, mode: int, data: Any, kwargs: dict[str, Any]) -> bytes:
    """Encode a call: the function's part (see dumps_function), then ``(mode, data,
    kwargs)`` pickled.

    The two are pickled apart so that the ``__main__`` check of the arguments is not
    set off by a function that was (deliberately) pickled by value.
    """
    if not kwargs and _plain_items(data):  # no buffers and no code: nothing to check
        return fn_part + marshal.dumps((mode, data, kwargs))
    fds: list[int] = []
    try:
        payload = fn_part + dumps((mode, data, kwargs), fds)
    except Exception as exc:
        exc.add_note(f"procpool: {_culprit(mode, data, kwargs)} could not be pickled")
        raise
    if not fds:
        return payload
    return shm.OOBPayload.holding(payload, fds)


def _culprit(mode: int, data: Any, kwargs: dict[str, Any]) -> str:
    """Which part of a call cannot be pickled, in words (the slow path of an error)."""
    what = "argument {} of the call" if mode == _APPLY else "item {} of the chunk"
    parts = [(what.format(i), value) for i, value in enumerate(data)]
    parts += [(f"keyword argument {key!r} of the call", value) for key, value in kwargs.items()]
    for where, value in parts:
        try:
            dumps(value)
        except Exception:
            return f"{where} ({type(value).__name__} object)"
    return "the call's arguments"


def split_call(
    payload: bytes | bytearray | memoryview, fds: list[int] | None = None
) -> tuple[bytes, Any]:
    """The function's pickle and the unpickled ``(mode, data, kwargs)`` of a call."""
    (n,) = _FN_LEN.unpack_from(payload)
    end = _FN_LEN.size + n
    return bytes(payload[_FN_LEN.size : end]), call_args(payload, end, fds)


def call_args(
    payload: bytes | bytearray | memoryview, start: int, fds: list[int] | None = None
) -> Any:
    """The unpickled ``(mode, data, kwargs)`` of a call whose function part ends at
    ``start``."""
    args = memoryview(payload)[start:]
    return shm.loads(args, fds) if fds else loads(args)


def _describe(fn: object) -> str:
    """A short name for a callable, used in error messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


_NOTHING = object()


def error_report(exc: BaseException, unsent: object = _NOTHING) -> bytes:
    """Pickle an exception raised in a worker, with its traceback text.

    The exception is also unpickled here, so one that cannot be rebuilt (a custom
    ``__init__`` that pickle cannot call again) is caught in the worker and sent by
    name and message instead. ``unsent`` is the result that ``exc`` stopped from being
    pickled, if that is what happened.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc_bytes: bytes | None
    try:
        exc_bytes = dumps(exc)
        pickle.loads(exc_bytes)
    except BaseException:
        exc_bytes = None
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    unsent_repr = None if unsent is _NOTHING else _safe(_short_repr, unsent)
    report = ErrorReport(exc_bytes, type_name, _safe(str, exc), tb, unsent_repr)
    return pickle.dumps(report, PROTOCOL)


def _safe(text: Callable[[Any], str], obj: object) -> str:
    try:
        return text(obj)
    except BaseException:
        return f"<{text.__name__}() of the {type(obj).__name__} object failed>"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_short_repr = _REPR.repr


#: A short name for a callable, cached per function.
describe = _PerFunction(_describe)


def rebuild_error(payload: Any) -> BaseException:
    """Turn a worker's ErrorReport back into an exception, with its traceback as cause
    (for both backends: the local engine and Dask)."""
    report: ErrorReport = loads(payload)
    exc: BaseException | None = None
    if report.exc is not None:
        try:
            exc = loads(report.exc)
        except BaseException:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(report.type_name, report.message)
    exc.__cause__ = RemoteTraceback(report.traceback)
    if report.unsent is not None:
        setattr(exc, UNSENT_RESULT, report.unsent)  # (a Pool makes it a MaybeEncodingError)
    return exc
