"""A frame reader on a socket: no schedule point per frame, but a flooding peer cannot
starve the other tasks."""

from __future__ import annotations

import socket

import trio

from stateward._protocol.wire import FrameReader, pack_frame


async def test_a_reader_of_buffered_frames_lets_other_tasks_run() -> None:
    """Reading 64 frames that are all there already yields to other tasks now and then."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"".join(pack_frame({"kind": "x", "n": n}) for n in range(64)))
        reader = FrameReader(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), ours)
        turns = 0
        read: list[int] = []

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.lowlevel.checkpoint()
            before = turns
            for _ in range(64):
                frame = await reader.receive()
                assert frame is not None
                read.append(frame["n"])
            nursery.cancel_scope.cancel()
    assert read == list(range(64))
    assert turns - before >= 3


async def test_a_reader_on_a_socket_sees_the_end_of_the_stream() -> None:
    """A peer that closes its end, mid-frame or between frames, ends the stream."""
    ours, theirs = socket.socketpair()
    with ours:
        theirs.sendall(pack_frame({"kind": "x"}) + pack_frame({"kind": "y"})[:5])
        theirs.close()
        reader = FrameReader(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), ours)
        assert await reader.receive() == {"kind": "x"}
        assert await reader.receive() is None
