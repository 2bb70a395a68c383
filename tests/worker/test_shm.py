"""Issue 4: large buffers cross through shared memory, with nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import procpool
import shm_funcs as sf
from procpool import WorkerLostError

MB = 1024 * 1024


def open_memfds() -> int:
    """Descriptors of procpool's shared memory this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:procpool")
        except OSError:  # closed meanwhile
            pass
    return count


def test_large_arrays_travel_without_copies(start_method: str) -> None:
    big = np.arange(4 * MB // 8, dtype=np.float64)
    small = np.arange(1000, dtype=np.float64)
    with procpool.Pool(2, context=start_method) as pool:
        mapped, nbytes, total = pool.apply(sf.describe, (big,))
        assert mapped and nbytes == big.nbytes and total == float(big.sum())
        assert pool.apply(sf.describe, (small,))[0] is False  # small stays in the pipe
        doubled = pool.apply(sf.double, (big,))
        assert np.array_equal(doubled, big * 2)
        assert doubled.flags.writeable
        doubled[0] = 7.0  # the parent owns what it received
        raw = bytes(range(256)) * (2 * MB // 256)
        assert pool.apply(sf.echo, (raw,)) == raw
        assert pool.map(sf.double, [big, small, big], chunksize=1)[2][5] == 10.0


def test_descriptors_are_released_after_success_error_and_death(
    start_method: str, tmp_path: Path
) -> None:
    big = np.ones(2 * MB // 8)
    with procpool.Pool(1, context=start_method) as pool:
        pool.apply(sf.echo, (big,))
        assert open_memfds() == 0
        for _ in range(5):
            pool.apply(sf.double, (big,))
        with pytest.raises(WorkerLostError):
            pool.apply(sf.die, (big,))
        kept = pool.apply(sf.echo, (big,))
        assert open_memfds() == 1  # the mapping under the array we hold
        del kept
        assert open_memfds() == 0


def test_a_retry_sees_the_original_argument(tmp_path: Path) -> None:
    """Workers map arguments copy-on-write: a dying first attempt cannot corrupt them."""
    big = np.ones(2 * MB // 8)
    with procpool.Pool(1, retries=1) as pool:
        out = pool.apply(sf.scribble_then_die, (big, str(tmp_path / "m")))
    assert (out == -1).all()
    assert (big == 1).all()


def test_large_bytes_cross_out_of_band_and_come_back_as_bytes(start_method: str) -> None:
    blob = os.urandom(3 * MB)
    with procpool.Pool(1, context=start_method) as pool:
        back = pool.apply(sf.echo, (blob,))
        assert type(back) is bytes and back == blob
        nested = pool.apply(sf.echo, ([blob, {"k": blob}, "small"],))
        assert nested == [blob, {"k": blob}, "small"]
        assert type(nested[1]["k"]) is bytes
        assert open_memfds() == 0


def test_a_long_list_of_small_items_is_pickled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickle over the shared-memory threshold with nothing out of band is looked
    into for large bytes; a long list of numbers has none and must not be walked and
    pickled a second time (that doubled the cost of big maps)."""
    from procpool._worker import serialize

    calls = []
    real = serialize.pickle.dumps

    def counting(obj: object, *args: object, **kwargs: object) -> bytes:
        calls.append(type(obj))
        return real(obj, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(serialize.pickle, "dumps", counting)
    numbers = list(range(300_000))  # ~1.5 MB pickled
    fds: list[int] = []
    data = serialize.dumps(numbers, fds)
    assert calls == [list] and not fds
    assert serialize.pickle.loads(data) == numbers
    # Large bytes in a short container are still found and sent out of band.
    calls.clear()
    blob = b"x" * (2 * MB)
    data = serialize.dumps((1, blob), fds)
    try:
        assert len(calls) == 2 and len(fds) == 1 and len(data) < MB
    finally:
        for fd in fds:
            os.close(fd)
