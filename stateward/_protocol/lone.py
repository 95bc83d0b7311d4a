"""Waiting for a socket in ``poll(2)`` instead of a round of trio's scheduler.

Each side of a task process's socket spends most of a state call waiting for the
other: the task process for its answer, the runtime's relay for the next request.
Waiting in trio costs each side a round of its scheduler (re-arming the socket in
epoll, ``epoll_wait``, rescheduling and resuming the task). When trio has nothing else
to run, a task can instead wait in ``poll(2)`` on the socket *and on trio's own epoll
descriptor*, which is readable as soon as anything trio waits for is ready (another
socket or pipe, a thread's ``run_sync_soon``, a signal); the wait ends by trio's next
deadline. So the task holds trio's thread only while trio itself would sleep, and
gives it back as soon as trio has something to do.

What the run queue cannot show are the tasks already scheduled in the batch trio is
running (they have left the queue): those wait while this task blocks. So a task waits
this way at most :data:`WAITS_PER_YIELD` times in a row, and for at most its owner's
``budget`` of seconds in all, before it waits in trio again.

This needs trio's epoll backend (Linux) and reads trio's run state directly (there is
no public way to its epoll descriptor); anywhere else, or if trio's internals change,
:func:`lone_wait` returns ``None`` and callers wait in trio as before.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any, Final

#: The most waits in ``poll`` in a row before a task waits in trio again.
WAITS_PER_YIELD: Final = 16


class LoneWait:
    """Waits for one socket to be readable in ``poll`` while trio has nothing else to do.

    Only :func:`lone_wait` makes one (in trio's thread).
    """

    __slots__ = ("_budget", "_left", "_may_wait", "_poller", "_runner", "_socket", "_waits")

    def __init__(
        self, sock: socket.socket, may_wait: Callable[[], bool], budget: float, runner: Any
    ) -> None:
        self._socket = sock.fileno()
        self._may_wait = may_wait
        self._budget = budget
        self._runner = runner
        self._poller = select.poll()
        self._poller.register(self._socket, select.POLLIN)
        self._poller.register(runner.io_manager._epoll.fileno(), select.POLLIN)
        self._waits = 0
        self._left = budget

    def yielded(self) -> None:
        """The task has just waited in trio (its batch-mates have run): start afresh."""
        self._waits = 0
        self._left = self._budget

    def wait(self) -> bool:
        """Block until the socket is readable, if trio has nothing else to do meanwhile.

        Returns:
            True: the socket is readable (and trio had nothing to do while this waited).
            False: wait in trio instead; a task is runnable, a callback is queued, a
            deadline is due, trio's I/O is ready, the owner's ``may_wait`` said no, or
            this task has waited here long enough without yielding.
        """
        runner = self._runner
        if (
            self._waits >= WAITS_PER_YIELD
            or runner.runq
            or runner.entry_queue.size()
            or not self._may_wait()
        ):
            return False
        limit = min(self._left, runner.deadlines.next_deadline() - runner.current_time())
        if limit <= 0:
            return False
        self._waits += 1
        start = time.perf_counter()
        events = self._poller.poll(None if limit == float("inf") else limit * 1000)
        self._left -= time.perf_counter() - start
        # Trio's I/O is ready too (a second event, or the only one): trio runs first;
        # the socket is still readable after.
        return len(events) == 1 and events[0][0] == self._socket


def lone_wait(sock: socket.socket, may_wait: Callable[[], bool], budget: float) -> LoneWait | None:
    """A :class:`LoneWait` for ``sock`` in the current trio run (call it in trio's
    thread); ``None`` where trio's run state is not as this module expects.

    Args:
        sock: The socket waited for.
        may_wait: Asked before each wait; False: wait in trio. A side whose frame
            writer still holds frames says no: the writer's task sends them, and it
            may be scheduled in the batch trio is running, which this cannot see.
        budget: The most seconds spent in ``poll`` between two waits in trio (``inf``:
            only :data:`WAITS_PER_YIELD` bounds them).
    """
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT

        runner = GLOBAL_RUN_CONTEXT.runner
        # What LoneWait reads, looked up once: an AttributeError says trio changed.
        _ = (runner.runq, runner.entry_queue.size, runner.deadlines.next_deadline,
             runner.current_time)  # fmt: skip
        if not isinstance(runner.io_manager._epoll, select.epoll):
            return None
        return LoneWait(sock, may_wait, budget, runner)
    except (ImportError, AttributeError, ValueError, OSError):
        return None
