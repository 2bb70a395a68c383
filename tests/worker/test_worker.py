"""The worker's own loop, driven in this process over real pipes (no child process).

These pin down behaviour that is hard to provoke from outside: what happens when a
signal lands at an awkward moment, and how often the worker reads its pipe.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator

import pytest

from procpool._worker import main as worker_main
from procpool._worker import serialize
from procpool._worker.wire import FrameReader, Kind, frame


class _Rig:
    """A _Worker on pipes whose other ends this test holds."""

    def __init__(self) -> None:
        task_r, self.task_w = os.pipe()
        self.result_r, result_w = os.pipe()
        direct_r, direct_w = os.pipe()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._fds = [task_r, self.task_w, self.result_r, result_w, direct_r, direct_w]
        self._socks = [a, b]
        config = worker_main.WorkerConfig(None, (), None, None, None)
        self.worker = worker_main._Worker(task_r, result_w, direct_w, b.fileno(), config)
        os.set_blocking(self.result_r, False)
        self.reader = FrameReader(self.result_r)

    def send(self, *frames: bytes) -> None:
        os.write(self.task_w, b"".join(frames))

    def answers(self) -> list[tuple[int, int]]:
        try:
            self.reader.fill()
        except BlockingIOError:
            return []
        return [(kind, tid) for kind, tid, _ in self.reader.frames()]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        for sock in self._socks:
            sock.close()


@pytest.fixture
def rig() -> Iterator[_Rig]:
    r = _Rig()
    yield r
    r.close()


def _call(tid: int) -> bytes:
    payload = serialize.call_payload(serialize.dumps_function(abs), worker_main.APPLY, (-tid,), {})
    return frame(Kind.CALL, tid, payload)


def test_a_steal_signal_during_a_steal_is_not_handled_inside_it(rig: _Rig) -> None:
    """A second SIGUSR1 landing while the worker walks its queue for CANCELs used to
    run the whole handler again inside that walk ("deque mutated during iteration"
    in a worker, seen under an imap on a loaded machine). It must be left for the
    start of the next call."""
    worker = rig.worker
    rig.send(*(_call(tid) for tid in (1, 2, 3, 4)))
    assert worker.receive(block=True)
    rig.send(frame(Kind.CANCEL, 3), frame(Kind.CANCEL, 4))

    real_drop = worker.drop
    depth = 0

    def drop_with_a_signal_landing(tid: int) -> None:
        nonlocal depth
        depth += 1
        try:
            assert depth == 1, "absorb() ran again inside itself"
            worker.on_steal(signal.SIGUSR1, None)  # what the kernel would do here
            real_drop(tid)
        finally:
            depth -= 1

    worker.drop = drop_with_a_signal_landing  # type: ignore[method-assign]
    worker.in_call = True  # the signal lands in the middle of call 1
    worker.absorb()

    assert [tid for tid, *_ in worker.queue] == [1, 2]
    assert rig.answers() == [(Kind.CANCELLED, 3), (Kind.CANCELLED, 4)]
    assert worker.steal_pending  # honoured as the next call starts


def test_a_queue_of_calls_is_run_without_a_read_per_call(
    rig: _Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls already read are run back to back; the pipe is looked at again only
    every _PEEK_EVERY seconds (a system call per call cost a fifth of a worker's time
    on short tasks), and every call is still answered, in order."""
    monkeypatch.setattr(worker_main, "_PEEK_EVERY", 3600.0)  # no peek falls due here
    worker = rig.worker
    calls = 200
    rig.send(*(_call(tid) for tid in range(1, calls + 1)), frame(Kind.STOP, 0))
    reads = 0
    real_receive = worker.receive

    def counting_receive(block: bool) -> bool:
        nonlocal reads
        reads += 1
        return real_receive(block)

    worker.receive = counting_receive  # type: ignore[method-assign]
    worker.loop()
    answered = []
    while batch := rig.answers():
        answered += batch
    assert answered == [(Kind.RESULT, tid) for tid in range(1, calls + 1)]
    assert reads == 1  # one read took all 200 calls and the STOP
