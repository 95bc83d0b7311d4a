"""Waiting for a task process's socket in poll while trio has nothing else to do
(stateward._protocol.lone): it gives trio's thread back as soon as trio has work."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from stateward._protocol.lone import WAITS_PER_YIELD, LoneWait, lone_wait


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs:
        yield ours, theirs


def make(ours: socket.socket, budget: float = math.inf, *, may: bool = True) -> LoneWait:
    lone = lone_wait(ours, lambda: may, budget)
    assert lone is not None  # Linux: trio's epoll backend
    return lone


async def test_it_waits_alone_for_a_socket_with_data(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Nothing else to do and a frame in the socket: the wait says read it."""
    ours, theirs = pair
    lone = make(ours)
    theirs.send(b"x")
    assert lone.wait()


async def test_it_gives_way_to_a_runnable_task(pair: tuple[socket.socket, socket.socket]) -> None:
    """A task waiting to run comes first, even with the socket readable."""
    ours, theirs = pair
    lone = make(ours)
    theirs.send(b"x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.lowlevel.checkpoint)
        assert not lone.wait()


async def test_it_gives_way_to_trio_io(pair: tuple[socket.socket, socket.socket]) -> None:
    """Another socket trio waits for becomes readable: trio runs first (its epoll
    descriptor is in the wait), even with our socket readable too."""
    ours, theirs = pair
    lone = make(ours)
    other, peer = socket.socketpair()
    with other, peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.lowlevel.wait_readable, other)
            await trio.testing.wait_all_tasks_blocked()
            peer.send(b"y")  # no checkpoint: trio has not seen it yet
            theirs.send(b"x")
            assert not lone.wait()


async def test_it_gives_way_to_a_callback_from_a_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A run_sync_soon callback queued (a thread's answer) comes first."""
    ours, theirs = pair
    lone = make(ours)
    theirs.send(b"x")
    ran = trio.Event()
    trio.lowlevel.current_trio_token().run_sync_soon(ran.set)
    assert not lone.wait()
    await ran.wait()


async def test_it_wakes_for_trio_io_while_blocked(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Blocked with an empty socket, it returns when anything trio waits for is ready
    (a thread's callback here), not only when the socket is."""
    ours, _ = pair
    lone = make(ours, budget=60.0)  # bounds the test, should the wait not wake
    token = trio.lowlevel.current_trio_token()
    ran = trio.Event()

    def later() -> None:
        # Most often this task is blocked in poll by then; queued just before the wait
        # instead, the callback makes the wait refuse at once: either way it must not
        # block. (No checkpoint between the thread's start and the wait, so trio cannot
        # run the callback first and leave nothing to wake the poll.)
        time.sleep(0.01)
        token.run_sync_soon(ran.set)

    thread = threading.Thread(target=later)
    thread.start()
    start = time.monotonic()
    assert not lone.wait()
    assert time.monotonic() - start < 30  # woken, not ended by the budget
    thread.join()
    await ran.wait()


async def test_it_ends_by_trio_s_next_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    """An empty socket and no other limit: the wait ends by trio's next deadline."""
    ours, _ = pair
    lone = make(ours)
    with trio.CancelScope(deadline=trio.current_time() + 0.001):  # noqa: ASYNC100
        assert not lone.wait()


async def test_it_waits_a_bounded_number_of_times_between_yields(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Tasks hidden in trio's running batch are not starved: after WAITS_PER_YIELD
    waits the task waits in trio, then may wait alone again."""
    ours, theirs = pair
    lone = make(ours)
    theirs.send(b"x")
    assert all(lone.wait() for _ in range(WAITS_PER_YIELD))
    assert not lone.wait()
    lone.yielded()
    assert lone.wait()


async def test_it_keeps_to_its_budget_and_its_owner(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """No seconds left, or an owner that says no (frames still to send): trio waits."""
    ours, theirs = pair
    theirs.send(b"x")
    assert not make(ours, budget=0).wait()
    assert not make(ours, may=False).wait()
