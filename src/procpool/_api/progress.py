"""Progress bars (tqdm, imported only when a bar is asked for)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from procpool._api.results import MapResult

T = TypeVar("T")

#: ``progress=`` takes False, True, or a dict of tqdm keyword arguments.
ProgressOption = bool | Mapping[str, Any]


def _make_bar(progress: ProgressOption, total: int | None) -> Any:
    from tqdm.auto import tqdm

    options: dict[str, Any] = {"total": total, "unit": "task"}
    if isinstance(progress, Mapping):
        options.update(progress)
    return tqdm(**options)


def progress_bar(it: Iterator[T], progress: ProgressOption, total: int | None) -> Iterator[T]:
    """Wrap an iterator of results so each one advances a bar on stderr."""
    if not progress:
        return it
    return _counted(it, _make_bar(progress, total))


def _counted(it: Iterator[T], bar: Any) -> Iterator[T]:
    with bar:
        for item in it:
            bar.update(1)
            yield item


def track_map(result: MapResult[T], progress: ProgressOption) -> list[T]:
    """Wait for a map's list, advancing a bar as each chunk completes."""
    if not progress:
        return result.get()
    with _make_bar(progress, len(result._items)) as bar:
        shown = 0
        try:
            while (done := result.wait_progress(shown)) is not None:
                bar.update(done - shown)
                shown = done
        except KeyboardInterrupt:
            result.cancel()
            raise
        if result._ok:
            bar.update(len(result._items) - shown)
    return result.get()
