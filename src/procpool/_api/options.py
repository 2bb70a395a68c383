"""Argument checks and defaults that Pool and Executor share."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get_context(context: Any) -> Any:
    """A multiprocessing context from None, a start-method name or a context."""
    if context is None:
        return multiprocessing.get_context()
    if isinstance(context, str):
        try:
            return multiprocessing.get_context(context)
        except ValueError:
            methods = ", ".join(multiprocessing.get_all_start_methods())
            raise ValueError(
                f"unknown start method {context!r}; use one of: {methods}"
            ) from None
    if not hasattr(context, "Process"):
        raise TypeError(f"context must be a start-method name or a multiprocessing context, "
                        f"not {type(context).__name__}")
    return context


def check_positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")


def check_callable(func: object, callback: object, error_callback: object) -> None:
    if not callable(func):
        raise TypeError(f"func must be a callable, not {type(func).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a callable, not {type(callback).__name__}")
    if error_callback is not None and not callable(error_callback):
        raise TypeError(f"error_callback must be a callable, not {type(error_callback).__name__}")


def check_tasks_per_child(value: int | None) -> None:
    if value is None:
        return
    if not isinstance(value, int):
        raise TypeError("max_tasks_per_child must be an integer")
    if value <= 0:
        raise ValueError("max_tasks_per_child must be >= 1")


def check_retries(retries: object) -> None:
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")


def task_options(
    defaults: tuple[float | None, int], task_timeout: float | None, retries: int | None
) -> tuple[float | None, int]:
    """A call's (time limit, retries): the pool's defaults, overridden per call."""
    if task_timeout is None and retries is None:
        return defaults
    check_positive("task_timeout", task_timeout)
    if retries is not None:
        check_retries(retries)
    return (
        defaults[0] if task_timeout is None else task_timeout,
        defaults[1] if retries is None else retries,
    )
