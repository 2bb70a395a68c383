"""The engine's frame header against a pickled dataclass message: ``python3 benchmarks/bench_wire.py``.

``procpool._wire`` encodes every message as a 13-byte :class:`struct.Struct` header
(size, kind, task id) followed by the already-pickled payload. The house style's
default is a frozen, slotted dataclass pickled whole; this measures what that would
cost per message, both ways (encode in the sender, decode in the receiver), for the
payload sizes the engine sees: none (READY, STOP, CANCEL), a small call or result,
and a 10 kB one. The dataclass is also given a 4-byte length prefix, since a pipe
needs framing either way.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import struct
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from procpool._worker.wire import HEADER, HEADER_SIZE, Kind, frame

_LEN = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Message:
    """The same fields as a frame, as the house style would have it."""

    kind: int
    tid: int
    payload: bytes


def frame_encode(kind: int, tid: int, payload: bytes) -> bytes:
    return frame(kind, tid, payload)


def frame_decode(data: bytes) -> tuple[int, int, bytes]:
    size, kind, tid = HEADER.unpack_from(data, 0)
    return kind, tid, data[HEADER_SIZE : HEADER_SIZE + size]


def pickle_encode(kind: int, tid: int, payload: bytes) -> bytes:
    body = pickle.dumps(Message(kind, tid, payload), 5)
    return _LEN.pack(len(body)) + body


def pickle_decode(data: bytes) -> Message:
    (size,) = _LEN.unpack_from(data, 0)
    msg: Message = pickle.loads(data[_LEN.size : _LEN.size + size])
    return msg


def per_call_ns(fn: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, 10_000)
    return statistics.median(t / number * 1e9 for t in timer.repeat(repeat, number))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    kind, tid = Kind.RESULT, 123_456_789
    print("| payload | frame encode | dataclass encode | frame decode | dataclass decode | "
          "dataclass cost (encode + decode) | bytes of overhead: frame / dataclass |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in (0, 100, 10_000):
        payload = bytes(size)
        framed = frame_encode(kind, tid, payload)
        pickled = pickle_encode(kind, tid, payload)
        assert frame_decode(framed) == (kind, tid, payload)
        assert pickle_decode(pickled) == Message(kind, tid, payload)
        fe = per_call_ns(lambda p=payload: frame_encode(kind, tid, p), args.repeat)
        pe = per_call_ns(lambda p=payload: pickle_encode(kind, tid, p), args.repeat)
        fd = per_call_ns(lambda d=framed: frame_decode(d), args.repeat)
        pd = per_call_ns(lambda d=pickled: pickle_decode(d), args.repeat)
        print(f"| {size:,} B | {fe:,.0f} ns | {pe:,.0f} ns | {fd:,.0f} ns | {pd:,.0f} ns "
              f"| {(pe + pd) / (fe + fd):.1f}\N{MULTIPLICATION SIGN} the frame's "
              f"| {len(framed) - size} / {len(pickled) - size} B |")


if __name__ == "__main__":
    main()
