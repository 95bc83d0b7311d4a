"""The task-process wire: length-delimited JSON frames over a byte stream.

Each frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one
object, at most :data:`MAX_FRAME_BYTES`: the wire form of a frame of
:mod:`stateward._protocol.frames`. :class:`FrameReader` returns the JSON objects as read,
so a side can answer a request it cannot decode (the parent answers it with a
``PROTOCOL`` error response, correlated by its ``id``) while a stream that is not frames
(a bad length, not JSON) is refused.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from .._errors import ProtocolError
from .._values import depth_problem, find_non_json, shorten
from .converter import encode, encode_frame
from .frames import Frame
from .messages import Request, Response

#: The largest frame either side sends or accepts: 16 MiB of JSON.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: How many bytes a writer holds (queued for a slow reader, or reserved for frames being
#: built) before it holds the peer back.
MAX_QUEUED_BYTES: Final = 32 * 1024 * 1024

_HEADER: Final = struct.Struct(">I")


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def pack_frame(frame: Frame | Mapping[str, Any]) -> bytes:
    """Return ``frame`` as the bytes of one frame.

    Args:
        frame: A frame, or a JSON object as it goes on the wire (for tests that
            write what a well-behaved side would not).

    Raises:
        ProtocolError: ``frame`` is not JSON, or is over :data:`MAX_FRAME_BYTES`.
    """
    data = frame if isinstance(frame, Mapping) else encode_frame(frame)
    try:
        text = _ENCODER.encode(data)
    except (TypeError, ValueError) as exc:
        msg = f"a {data.get('kind', '?')} frame must hold JSON only: {exc}"
        raise ProtocolError(msg) from exc
    return pack_text(text, data.get("kind", "?"))


def pack_request(
    request_id: int, request: Request, values: Sequence[tuple[str, str]] = ()
) -> bytes:
    """Return a request frame's bytes, with state values already encoded as JSON text.

    Args:
        request_id: The frame's ``id``.
        request: The request message.
        values: ``(field, JSON text)`` for each field of ``request`` that holds a state
            value (:func:`~stateward._protocol.messages.state_values`), checked and
            encoded by the caller: the text goes into the frame as it is, so a value is
            encoded once.

    Raises:
        ProtocolError: the frame is over :data:`MAX_FRAME_BYTES`.
    """
    if values:
        blanks: dict[str, Any] = dict.fromkeys((name for name, _ in values), None)
        request = attrs.evolve(request, **blanks)
    message = encode(request)
    for name, _ in values:
        del message[name]
    text = _ENCODER.encode(message)  # at least {"type":...}: never empty
    spliced = "".join(f',"{name}":{value}' for name, value in values)
    return pack_text(
        f'{{"kind":"request","id":{request_id},"msg":{text[:-1]}{spliced}}}}}', "request"
    )


def pack_response(request_id: int, response: Response) -> bytes:
    """Return the bytes of the response frame answering request ``request_id``.

    The same bytes as ``pack_frame(ResponseFrame(request_id, response))``, without the
    frame's trip through the converter (a relay packs one per state call).

    Raises:
        ProtocolError: the response is not JSON, or the frame is over
            :data:`MAX_FRAME_BYTES`.
    """
    try:
        text = _ENCODER.encode(encode(response))
    except (TypeError, ValueError) as exc:
        msg = f"a response frame must hold JSON only: {exc}"
        raise ProtocolError(msg) from exc
    return pack_text(f'{{"kind":"response","id":{request_id},"msg":{text}}}', "response")


def pack_text(text: str, kind: str) -> bytes:
    """Return ``text`` (one frame's JSON object, already encoded) as a frame's bytes.

    Raises:
        ProtocolError: the text is not valid UTF-8 text, or is over
            :data:`MAX_FRAME_BYTES` once encoded.
    """
    try:
        body = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate in a str
        msg = f"a {kind} frame must hold valid text: {exc}"
        raise ProtocolError(msg) from exc
    if len(body) > MAX_FRAME_BYTES:
        msg = (
            f"a {kind} frame of {len(body)} bytes is over the limit of "
            f"{MAX_FRAME_BYTES} bytes (16 MiB)"
        )
        raise ProtocolError(msg)
    return _HEADER.pack(len(body)) + body


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


#: Frames a :class:`FrameReader` returns without waiting before it lets other tasks run
#: (a peer that sends without pause must not starve them).
_FRAMES_PER_CHECKPOINT: Final = 16


class FrameReader:
    """Reads frames from a byte stream (one reader per stream).

    Args:
        stream: Where frames come from.
        sock: The stream's socket, read directly: a read that finds data does not
            yield to the scheduler (a trio stream's does, which costs a scheduling
            round per frame). Either way one frame in :data:`_FRAMES_PER_CHECKPOINT`
            returned without waiting yields.
    """

    __slots__ = ("_buffer", "_socket", "_stream", "_unyielded", "size")

    def __init__(self, stream: trio.abc.ReceiveStream, sock: socket.socket | None = None) -> None:
        self._stream = stream
        self._socket = sock
        self._buffer = bytearray()
        self._unyielded = 0
        #: The size in bytes of the frame :meth:`receive` returned last.
        self.size = 0

    async def receive(self) -> dict[str, Any] | None:
        """Return the next frame, or ``None`` once the stream has ended.

        A frame cut short by the end of the stream (its writer died) counts as the end.

        Raises:
            ProtocolError: a length over :data:`MAX_FRAME_BYTES`, a body that is not
                UTF-8 JSON, or JSON that is not an object: the stream is corrupt.
        """
        # Frames already read in are returned without a schedule point: a peer that
        # sends without pause still lets other tasks run every few frames.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._unyielded += 1
        if self._unyielded >= _FRAMES_PER_CHECKPOINT:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        header = await self._read_exactly(_HEADER.size)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            msg = f"a frame announced {size} bytes, over the limit of {MAX_FRAME_BYTES} (16 MiB)"
            raise ProtocolError(msg)
        body = await self._read_exactly(size)
        if body is None:
            return None
        self.size = _HEADER.size + size
        try:
            frame = json.loads(body.decode(), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
            msg = f"a frame is not UTF-8 JSON ({type(exc).__name__}: {exc}): {bytes(body[:60])!r}"
            raise ProtocolError(msg) from exc
        if not isinstance(frame, dict):
            msg = f"a frame must be a JSON object, got {type(frame).__name__} {frame!r:.60}"
            raise ProtocolError(msg)
        return frame

    async def _read_exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            wanted = max(65536, size - len(self._buffer))
            try:
                if self._socket is None:
                    chunk = await self._stream.receive_some(wanted)
                else:
                    chunk = await self._receive_direct(wanted)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _receive_direct(self, size: int) -> bytes:
        sock = self._socket
        assert sock is not None
        while True:
            try:
                return sock.recv(size)
            except BlockingIOError:
                self._unyielded = 0
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:  # closed here (EBADF), or reset by the peer
                raise trio.BrokenResourceError(str(exc)) from exc


class ByteBudget:
    """Bytes held on behalf of a peer, under a limit.

    :meth:`acquire` waits while what is held plus the new bytes would pass the limit,
    unless nothing is held: one item larger than the limit still passes, alone.

    Args:
        limit: The most bytes held at once (but for one larger item).
    """

    __slots__ = ("_changed", "held", "limit", "peak")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The bytes held now.
        self.held = 0
        #: The most bytes held at once so far.
        self.peak = 0
        self._changed = trio.Event()

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` more bytes fit under the limit (or nothing is held); hold them."""
        while self.held and self.held + size > self.limit:
            changed = self._changed
            await changed.wait()
        self.add(size)

    def add(self, size: int) -> None:
        """Hold ``size`` more bytes without waiting (what was held is now known to be more)."""
        self.held += size
        self.peak = max(self.peak, self.held)

    def release(self, size: int) -> None:
        """Stop holding ``size`` bytes; wake whoever waits for room."""
        if not size:
            return
        self.held -= size
        self._changed.set()
        self._changed = trio.Event()


class FrameWriter:
    """Writes frames in order, without a task switch when it can.

    A frame goes out at once when the socket takes it whole and nothing is queued before
    it (the common case: one request or response in flight); otherwise it is queued for
    :meth:`run`, the one writer task, so frames never interleave. :attr:`budget` counts
    the bytes queued, and the room held by :meth:`reserve` for frames not yet posted.

    Args:
        stream: Where frames go.
        sock: The stream's socket, for the direct writes; ``None``: always queue.
        limit: The most bytes queued and reserved before :meth:`reserve` waits.
    """

    __slots__ = ("_closed", "_inbox", "_outbox", "_queued", "_socket", "_stream", "budget")

    def __init__(
        self,
        stream: trio.abc.SendStream,
        sock: socket.socket | None = None,
        limit: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._stream = stream
        self._socket = sock
        self._outbox, self._inbox = trio.open_memory_channel[bytes](math.inf)
        # Frames handed to the writer task and not yet sent: direct writes wait for them.
        self._queued = 0
        #: The bytes queued for the peer and reserved for frames being built.
        self.budget = ByteBudget(limit)
        self._closed = False

    async def reserve(self, size: int) -> None:
        """Hold room for a frame of up to ``size`` bytes before building it.

        Waits while the bytes queued and reserved would pass the limit, so a peer that
        sends requests but does not read the responses is held back here (its requests
        stop being served) instead of growing this side's memory. Hand the same ``size``
        to :meth:`post` (``reserved=``), or to :meth:`release` if no frame follows.
        """
        await self.budget.acquire(size)

    def release(self, size: int) -> None:
        """Give back room :meth:`reserve` held for a frame that will not be posted."""
        self.budget.release(size)

    def post(self, data: bytes, *, reserved: int = 0) -> None:
        """Send ``data`` (packed frames) now or after what is queued (trio's thread only).

        Args:
            data: The frames' bytes.
            reserved: The room :meth:`reserve` held for them (given back here; what is
                queued is held until sent).

        Raises:
            trio.BrokenResourceError: the other side is gone.
            trio.ClosedResourceError: :meth:`close` was called.
        """
        self.budget.release(reserved)
        if self._closed:
            msg = "the frame writer is closed"
            raise trio.ClosedResourceError(msg)
        if not self._queued and self._socket is not None:
            try:
                sent = self._socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if sent == len(data):
                return
            data = data[sent:]
        self._queued += 1
        self.budget.add(len(data))
        self._outbox.send_nowait(data)

    def close(self) -> None:
        """Take no more frames; :meth:`run` returns once the queued ones are sent."""
        self._closed = True
        self._outbox.close()

    async def run(self) -> None:
        """Send queued frames, several at once when they pile up, until closed.

        Raises:
            trio.BrokenResourceError: the other side is gone.
        """
        async with self._inbox:
            async for data in self._inbox:
                batch = [data]
                while True:
                    try:
                        batch.append(self._inbox.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._stream.send_all(b"".join(batch))
                self._queued -= len(batch)
                self.budget.release(sum(len(data) for data in batch))


def check_json(value: object, where: str) -> None:
    """Refuse a value that would not come out of JSON as it went in.

    Allows None, str, int, finite float, bool, lists and tuples (they arrive as lists),
    and dicts with str keys, nested.

    Raises:
        TypeError: a part of ``value`` is of another type; the message says where.
        ValueError: a NaN or an infinity, or lists and dicts nested too deep.
    """
    found = find_non_json(value, where, none_ok=True, tuples_ok=True)
    if found is None:
        return
    path, part, problem = found
    if problem == "depth":
        msg = f"{where} {depth_problem(value)}"
        raise ValueError(msg)
    if problem == "nan":
        msg = f"{path} is {part!r}, which JSON cannot hold; use a str or None"
        raise ValueError(msg)
    if problem == "key":
        msg = f"{path} has a {type(part).__name__} key {part!r}; JSON keys are str"
        raise TypeError(msg)
    msg = (
        f"{path} is a {type(part).__name__} ({shorten(part)}), which is not JSON: use "
        "str, int, float, bool, None, list or dict with str keys"
    )
    raise TypeError(msg)
