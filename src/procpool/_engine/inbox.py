"""What other threads hand the scheduler: tasks, messages about them, and the pool's state.

Owner: the Inbox owns the queue of submitted tasks, the queue of messages (cancel,
close, terminate), the wake pipe, the task-id counter, the imap feeder threads, and
the pool's life-cycle state (``state``, ``broken_error``), which it changes only under
its submit lock: a submit checks the state under the same lock, so no task comes in
after close(), terminate() or a break.

Any thread may call the user-side methods. Only the scheduler thread takes from the
queues (``messages``, ``tasks``), and a caller borrowing a worker (see lending) may
take a lone task of its own under the engine's table lock.

**The wake pipe.** A submitter appends to a queue and writes one byte to the pipe,
only when no byte is already pending, so a burst of submits costs the scheduler one
wake-up.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable

from procpool._core.feeders import Feeders, not_running_error
from procpool._core.state import State
from procpool._core.task import TID_STEP, Task
from procpool._engine.pipes import close_parent_fd, parent_pipe

_RUNNING = State.RUNNING


class Cancel:
    """Stop this task (its sink already says cancelled)."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task


class Close:
    """Finish what was submitted, then stop the workers."""

    __slots__ = ()


class Terminate:
    """Fail what is left and stop the workers now."""

    __slots__ = ()


Message = Cancel | Close | Terminate


class Inbox:
    """The tasks and messages on their way to the scheduler, and the pool's state."""

    def __init__(self) -> None:
        self.state = State.RUNNING
        self.broken_error: BaseException | None = None
        self._tasks: deque[Task] = deque()
        self._messages: deque[Message] = deque()
        self._lock = threading.Lock()
        self.wake_fd, self._wake_w = parent_pipe()
        os.set_blocking(self.wake_fd, False)
        # The write end lives as long as this object, not the scheduler: a cancel(),
        # close() or terminate() after the scheduler ended must find this pipe (a
        # write to a closed end fails quietly), never a reused descriptor number.
        self.owner_pid = os.getpid()
        weakref.finalize(self, _close_in_owner, self._wake_w, self.owner_pid)
        self._wake_pending = False
        self.feeders = Feeders(self._lock, self.wake)
        # next() on it is atomic: no lock needed. Multiples of TID_STEP: the items of a
        # batch answer as tid + offset.
        self._tids = itertools.count(TID_STEP, TID_STEP)
        self.next_tid: Callable[[], int] = self._tids.__next__

    # ----------------------------------------------------------------- any thread

    def submit(self, tasks: list[Task], *, feeder: bool = False) -> None:
        """Hand tasks to the scheduler.

        A ``feeder`` (an imap reading its input, see start_feeder) may go on submitting
        after close(), as the stdlib's task thread does.
        """
        with self._lock:
            if self.feeders.refuse(self.state, feeder):
                raise self.not_running_error()
            for task in tasks:
                task.tid = next(self._tids)
            self._tasks.extend(tasks)
        self.wake()

    def submit_one(self, task: Task) -> None:
        """submit() for one task (apply_async: the most frequent call of all)."""
        with self._lock:
            if self.state is not _RUNNING:
                raise self.not_running_error()
            task.tid = next(self._tids)
            self._tasks.append(task)
        if not self._wake_pending:
            self.wake()

    def start_feeder(self, feed: Callable[[], None]) -> None:
        """Run ``feed`` (which submits with ``feeder=True``) in a thread; the pool
        winds down after close() only once every feeder has returned."""
        self.feeders.start(feed)

    def cancel(self, task: Task) -> None:
        """Stop a task whose sink was already resolved as cancelled."""
        self._post(Cancel(task))

    def close(self) -> None:
        with self._lock:
            if self.state is State.RUNNING:
                self.state = State.CLOSING
        self._post(Close())

    def terminate(self) -> None:
        with self._lock:
            if self.state is not State.BROKEN:
                self.state = State.TERMINATING
        self._post(Terminate())

    def not_running_error(self) -> BaseException:
        return not_running_error(self.state, self.broken_error)

    def wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # closed: the scheduler is gone, nothing to wake
                pass

    def _post(self, message: Message) -> None:
        self._messages.append(message)
        self.wake()

    # ------------------------------------------------------------ scheduler side

    def messages(self) -> list[Message]:
        """Empty the wake pipe; take the messages (the tasks come after, see tasks()).

        Order matters: empty the pipe, then clear the flag, then read the queues. A
        submitter appends before it reads the flag, so anything it adds after our
        read finds the flag clear and writes a fresh byte. (Clearing the flag before
        emptying the pipe could swallow that byte and strand a task.)
        """
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False
        taken = []
        messages = self._messages
        while messages:
            taken.append(messages.popleft())
        return taken

    def tasks(self) -> list[Task]:
        """Take every task submitted so far."""
        taken = []
        tasks = self._tasks
        while tasks:
            taken.append(tasks.popleft())
        return taken

    def has_work(self) -> bool:
        """Tasks not taken yet, or a feeder that may still submit some."""
        return bool(self._tasks) or self.feeders.count > 0

    def queue_view(self) -> deque[Task]:
        """The task queue, to look at only (the lending hot path binds it). Only other
        threads append to it, so what is found at its head stays there while the
        caller holds the table lock (the scheduler takes tasks under it)."""
        return self._tasks

    def take_only(self) -> None:
        """Remove the lone task found in queue_view() (under the table lock)."""
        self._tasks.popleft()

    def break_(self, error: BaseException) -> None:
        """The pool is broken: refuse all new work with ``error``."""
        with self._lock:
            self.state = State.BROKEN
            self.broken_error = error

    def close_read_end(self) -> None:
        """The scheduler is done: nothing reads the wake pipe any more."""
        close_parent_fd(self.wake_fd)


def _close_in_owner(fd: int, owner_pid: int) -> None:
    """Close a parent-side descriptor, but only in the process that opened it.

    A forked worker inherits a copy of every live pool object; when one of them is
    collected there, its number may already belong to a different file of the child.
    """
    if os.getpid() == owner_pid:
        close_parent_fd(fd)
