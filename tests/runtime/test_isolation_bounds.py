"""What the parent holds for one task process is bounded, whatever the process does.

The child is played by hand over a lockstep stream (a write waits for the other side
to read), so a child that never reads its responses holds the parent's writer back as
a real socket would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from stateward import MemoryStore, open_runtime
from stateward._protocol import messages as m
from stateward._protocol.converter import encode
from stateward._protocol.wire import pack_frame
from stateward._runtime.isolation import (
    MAX_IN_FLIGHT,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    serve_child,
)
from stateward._runtime.supervisor import Caller
from stateward.store.base import TaskScope, Writer

SCOPE = TaskScope("d", "r", "t", -1)


def request(request_id: int, msg: Any) -> bytes:
    return pack_frame({"kind": "request", "id": request_id, "msg": encode(msg)})


async def send_and_wait(child: trio.abc.Stream, frames: list[bytes]) -> None:
    """Send ``frames`` from a task (the parent may stop reading), then let all settle."""
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            for frame in frames:
                await child.send_all(frame)

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def runtime() -> AsyncIterator[Any]:
    async with open_runtime(store=MemoryStore()) as rt:
        yield rt


async def test_a_child_that_lists_and_never_reads_holds_back_the_listings(runtime: Any) -> None:
    """64 listings of 1 MiB of task state, never read: the parent builds what fits its
    response budget, not all 64 (the rest wait to be served)."""
    rt = runtime
    value = "x" * 60_000
    for index in range(18):
        await rt.state.task("d", "r", "t").aset(f"k{index}", value)
    client = rt.client(Caller(task=SCOPE, writer=Writer("d", "r", "t", -1, 1)))
    listing_bytes = len(pack_frame({"kind": "response", "id": 1, "msg": {"items": {}}})) + 18 * (
        len(value) + 8
    )
    parent, child = trio.testing.lockstep_stream_pair()
    before = rt.stats.requests
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_child, parent, client)
        frames = [request(n, m.ListTaskState()) for n in range(1, 65)]
        await send_and_wait(child, frames)
        built = rt.stats.requests - before
        nursery.cancel_scope.cancel()
    assert listing_bytes > 1024 * 1024
    assert 1 < built < 64
    assert built * listing_bytes <= MAX_RESPONSE_BYTES


async def drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(1 << 20):
        pass


class StalledClient:
    """A supervisor client whose answers wait until ``go`` is set; counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.go = trio.Event()

    async def request(self, msg: Any) -> Any:
        self.requests += 1
        await self.go.wait()
        return m.OkResponse()


async def test_large_requests_in_flight_are_bounded_by_bytes() -> None:
    """While the supervisor has not answered, the parent stops reading a child's requests
    once their frames pass the byte budget, and reads the rest once they are answered."""
    client = StalledClient()
    parent, child = trio.testing.lockstep_stream_pair()
    frames = [request(n, m.SetTaskState("k", "y" * 1024 * 1024)) for n in range(1, 41)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_child, parent, client)
        async with trio.open_nursery() as sending:

            async def send() -> None:
                for frame in frames:
                    await child.send_all(frame)

            sending.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            held = client.requests
            client.go.set()
            async with trio.open_nursery() as reading:
                reading.start_soon(drain, child)
                await trio.testing.wait_all_tasks_blocked()
                reading.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert 1 < held < len(frames)
    assert held * len(frames[0]) <= MAX_REQUEST_BYTES
    assert client.requests == len(frames)


async def test_small_requests_in_flight_are_bounded_by_count() -> None:
    """However many small requests a child sends, at most MAX_IN_FLIGHT are served at once."""
    client = StalledClient()
    parent, child = trio.testing.lockstep_stream_pair()
    frames = [request(n, m.GetTaskState("k")) for n in range(1, MAX_IN_FLIGHT + 20)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_child, parent, client)
        await send_and_wait(child, frames)
        nursery.cancel_scope.cancel()
    assert client.requests == MAX_IN_FLIGHT
