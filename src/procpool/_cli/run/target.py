"""The function ``procpool run`` maps, and the wrapper that runs it in a worker.

The parent resolves ``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION`` once, to fail
early with a clear message and to fingerprint the function. Workers receive only the
:class:`TargetSpec` and import the function themselves (cached per process), so a
function defined in a plain ``.py`` file works under every start method.

:func:`run_chunk` is what actually crosses to the workers: it calls the function on
each input of a chunk, catching each call's exception so that one bad input fails
only its own row, and turns each result into text right there (JSON, else ``repr``),
so an odd result object never has to be pickled back.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import marshal
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

#: How a result was stored: ``json`` text, or the ``repr`` of a non-JSON value.
JSON, REPR, ERROR = "json", "repr", "error"

_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class TargetError(Exception):
    """The target cannot be imported, or is not a callable."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where the function lives. Sent to the workers, which import it themselves.

    ``search_dir`` goes first on ``sys.path`` (the current directory for a module,
    the file's directory for a file), as ``python -m`` and ``python file.py`` do.
    """

    module: str
    path: str
    qualname: str
    search_dir: str

    def __str__(self) -> str:
        return f"{self.path or self.module}:{self.qualname}"


@dataclass(frozen=True, slots=True)
class CallError:
    """One call's exception, as text: its type, message and the worker's traceback."""

    type_name: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException, skip_frames: int = 0) -> CallError:
        tb = exc.__traceback__
        for _ in range(skip_frames):
            tb = tb.tb_next if tb is not None else None
        lines = traceback.format_exception(type(exc), exc, tb)
        return cls(type_name(exc), safe_str(exc), "".join(lines))


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What a worker sends back for one chunk: a column per field, one entry per input.

    ``formats[i]`` is JSON, REPR or ERROR; ``values[i]`` is the result text (None on
    error) and ``errors`` maps the index of each failed call to its CallError.
    """

    pid: int
    started: list[float]
    durations: list[float]
    values: list[str | None]
    formats: list[str]
    errors: dict[int, CallError] = field(default_factory=dict)


def parse_target(text: str, cwd: str) -> TargetSpec:
    """``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION`` -> TargetSpec (no import yet)."""
    where, sep, qualname = text.rpartition(":")
    if not sep or not where or not qualname:
        raise TargetError(
            f"the target must be MODULE:FUNCTION or path/to/file.py:FUNCTION, not {text!r}"
        )
    if not all(part.isidentifier() for part in qualname.split(".")):
        raise TargetError(f"{qualname!r} is not a function name (in target {text!r})")
    if where.endswith(".py") or os.sep in where:
        path = os.path.abspath(os.path.join(cwd, where))
        return TargetSpec("", path, qualname, os.path.dirname(path))
    if not all(part.isidentifier() for part in where.split(".")):
        raise TargetError(f"{where!r} is neither a module name nor a path to a .py file")
    return TargetSpec(where, "", qualname, cwd)


_loaded: dict[TargetSpec, Callable[..., Any]] = {}


def load_function(spec: TargetSpec) -> Callable[..., Any]:
    """Import the target (once per process); TargetError says what went wrong."""
    fn = _loaded.get(spec)
    if fn is None:
        fn = _loaded[spec] = _resolve(spec)
    return fn


def _resolve(spec: TargetSpec) -> Callable[..., Any]:
    if spec.search_dir not in sys.path:
        sys.path.insert(0, spec.search_dir)
    obj: Any = _import_file(spec.path) if spec.path else _import_module(spec.module)
    owner = spec.path or f"module {spec.module!r}"
    for part in spec.qualname.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{owner} has no {part!r}{_suggest(obj)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"{spec} is a {type(obj).__name__}, not a function")
    fn: Callable[..., Any] = obj
    return fn


def _suggest(namespace: object) -> str:
    names = sorted(
        name
        for name, value in vars(namespace).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )
    return f" (its functions: {', '.join(names[:12])})" if names else ""


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(
                f"cannot import {name!r}: no module named {exc.name!r} (is it installed? "
                f"the current directory is searched too)"
            ) from None
        raise TargetError(f"cannot import {name!r}: {_last_lines(exc)}") from None
    except BaseException as exc:
        raise TargetError(f"cannot import {name!r}: {_last_lines(exc)}") from None


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise TargetError(f"cannot import {path}: no such file")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__procpool_target__"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TargetError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickle look their module up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise TargetError(f"cannot import {path}: {_last_lines(exc)}") from None
    return module


def _last_lines(exc: BaseException) -> str:
    """The exception, and where in the user's code it was raised (not importlib's frames)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if frames and not isinstance(exc, SyntaxError):  # a SyntaxError names its own line
        frame = frames[-1]
        text += f"\n  at {frame.filename}, line {frame.lineno}: {frame.line}"
    return text


def fingerprint(fn: Callable[..., Any]) -> str:
    """A short hash of the function's source (else its bytecode, else its name).

    Edits to the function's own text change it; edits to helpers it calls do not.
    """
    try:
        data = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn))}"
        data = marshal.dumps(code) if code is not None else name.encode()
    return hashlib.sha256(data).hexdigest()[:16]


def type_name(exc: BaseException) -> str:
    """``ValueError``, ``json.decoder.JSONDecodeError``, ``procpool.WorkerLostError``."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    if module.startswith("procpool._"):
        module = "procpool"  # the public name of procpool's own errors
    return f"{module}.{cls.__qualname__}"


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"


def encode_result(value: Any) -> tuple[str, str]:
    """A result as text: ``(json_text, JSON)`` when JSON can hold it, else its repr."""
    try:
        return _encode_json(value), JSON
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return repr(value), REPR
    except Exception as exc:
        return f"<{type(value).__name__} whose repr() failed: {safe_str(exc)}>", REPR


def run_chunk(spec: TargetSpec, calls: list[Any], spread: bool) -> ChunkOutcome:
    """Worker side: call the target on each input; ``spread`` means (args, kwargs) pairs."""
    fn = load_function(spec)
    started: list[float] = []
    durations: list[float] = []
    values: list[str | None] = []
    formats: list[str] = []
    errors: dict[int, CallError] = {}
    clock = time.perf_counter
    for index, call in enumerate(calls):
        started.append(time.time())
        begin = clock()
        try:
            value = fn(*call[0], **call[1]) if spread else fn(call)
        except BaseException as exc:  # one input's failure is its own row, whatever it is
            durations.append(clock() - begin)
            errors[index] = CallError.from_exception(exc, skip_frames=1)
            values.append(None)
            formats.append(ERROR)
            continue
        durations.append(clock() - begin)
        text, fmt = encode_result(value)
        values.append(text)
        formats.append(fmt)
    return ChunkOutcome(os.getpid(), started, durations, values, formats, errors)
