"""Frames between a task process and its parent: length-delimited JSON.

The wire: each frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON
holding one object, at most :data:`MAX_FRAME_BYTES`. The object's ``kind`` says what
it is:

========== ========= =================================================================
kind       direction fields
========== ========= =================================================================
start      to child  the :class:`StartFrame` fields: which task instance and try to run
request    to parent ``id`` (int, chosen by the child), ``msg`` (``messages.encode``)
response   to child  ``id`` of the request answered, ``msg`` (a response message)
rendered   to parent ``fields``: the rendered template fields, for ``.rendered``
result     to parent ``value`` (JSON), ``events`` (encoded ``AddAssetEvent`` messages)
error      to parent ``type``, ``message``, ``traceback`` of what the task raised
load_error to parent ``message``: the task could not be loaded from its file
========== ========= =================================================================

Requests are answered concurrently (up to :data:`MAX_IN_FLIGHT` per child), each
response carrying its request's ``id``, so a child may have several in flight. A
request frame that cannot be decoded (an unknown type, a bad or extra field, an extra
key in the frame) is answered with an ``ErrorResponse`` of type ``PROTOCOL``; a stream
that is not frames at all (bad length, not JSON, unknown kind) kills the child.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs
import trio

from ..errors import (
    ProtocolError,
)
from ..records import AssetInfo
from ..values import depth_problem, find_non_json, shorten

#: The largest frame either side sends or accepts: 16 MiB of JSON.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: How much a writer keeps queued for a slow reader before it holds the peer back.
MAX_QUEUED_BYTES: Final = 32 * 1024 * 1024

_HEADER: Final = struct.Struct(">I")


def pack_frame(frame: Mapping[str, Any]) -> bytes:
    """Return ``frame`` (a JSON object) as the bytes of one frame.

    Raises:
        ProtocolError: ``frame`` is not JSON, or is over :data:`MAX_FRAME_BYTES`.
    """
    try:
        body = json.dumps(
            frame, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
    except (TypeError, ValueError) as exc:
        msg = f"a {frame.get('kind', '?')} frame must hold JSON only: {exc}"
        raise ProtocolError(msg) from exc
    if len(body) > MAX_FRAME_BYTES:
        msg = (
            f"a {frame.get('kind', '?')} frame of {len(body)} bytes is over the limit of "
            f"{MAX_FRAME_BYTES} bytes (16 MiB)"
        )
        raise ProtocolError(msg)
    return _HEADER.pack(len(body)) + body


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


class FrameReader:
    """Reads frames from a byte stream (one reader per stream)."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def receive(self) -> dict[str, Any] | None:
        """Return the next frame, or ``None`` once the stream has ended.

        A frame cut short by the end of the stream (its writer died) counts as the end.

        Raises:
            ProtocolError: a length over :data:`MAX_FRAME_BYTES`, a body that is not
                UTF-8 JSON, or JSON that is not an object: the stream is corrupt.
        """
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
            try:
                chunk = await self._stream.receive_some(max(65536, size - len(self._buffer)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class FrameWriter:
    """Writes frames in order, without a task switch when it can.

    A frame goes out at once when the socket takes it whole and nothing is queued before
    it (the common case: one request or response in flight); otherwise it is queued for
    :meth:`run`, the one writer task, so frames never interleave.

    Args:
        stream: Where frames go.
        sock: The stream's socket, for the direct writes; ``None``: always queue.
    """

    __slots__ = (
        "_closed", "_inbox", "_outbox", "_progress", "_queued", "_queued_bytes", "_socket",
        "_stream",
    )  # fmt: skip

    def __init__(self, stream: trio.abc.SendStream, sock: socket.socket | None = None) -> None:
        self._stream = stream
        self._socket = sock
        self._outbox, self._inbox = trio.open_memory_channel[bytes](math.inf)
        # Frames handed to the writer task and not yet sent: direct writes wait for them.
        self._queued = 0
        self._queued_bytes = 0
        self._progress = trio.Event()
        self._closed = False

    async def room(self, size: int, limit: int = MAX_QUEUED_BYTES) -> None:
        """Wait until ``size`` more bytes fit under ``limit`` queued (or nothing is queued).

        A peer that sends requests but does not read the responses is held back here
        (its requests stop being read) instead of growing this side's memory.
        """
        while self._queued_bytes and self._queued_bytes + size > limit:
            progress = self._progress
            await progress.wait()

    def post(self, data: bytes) -> None:
        """Send ``data`` (packed frames) now or after what is queued (trio's thread only).

        Raises:
            trio.BrokenResourceError: the other side is gone.
            trio.ClosedResourceError: :meth:`close` was called.
        """
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
        self._queued_bytes += len(data)
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
                self._queued_bytes -= sum(len(data) for data in batch)
                self._progress.set()
                self._progress = trio.Event()


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


@attrs.frozen
class StartFrame:
    """The first frame: which task instance and try the child runs, and its settings."""

    #: The Dag file the child loads the task from.
    dag_file: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    max_tries: int
    #: The run's params (JSON).
    params: dict[str, Any]
    #: The concrete assets the task declared (asset refs already resolved).
    assets: tuple[AssetInfo, ...]
    #: Default retentions in seconds (``None``: forever).
    task_retention: float | None
    asset_retention: float | None
    #: The runtime's wall clock minus the child's ``time.time()`` at start: the child
    #: computes expiry times on the supervisor's clock.
    clock_offset: float

    def to_frame(self) -> dict[str, Any]:
        """The frame's JSON object."""
        data: dict[str, Any] = _start_converter.unstructure(self)
        return {"kind": "start", **data}

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> StartFrame:
        """Read a start frame.

        Raises:
            ProtocolError: the frame is not a start frame, or a field is missing or bad.
        """
        if frame.get("kind") != "start":
            msg = f"the first frame must be a start frame, got kind {frame.get('kind')!r}"
            raise ProtocolError(msg)
        fields = {k: v for k, v in frame.items() if k != "kind"}
        try:
            start: StartFrame = _start_converter.structure(fields, cls)
        except Exception as exc:
            problems = "; ".join(cattrs.transform_error(exc, path="start")) or repr(exc)
            msg = f"bad start frame: {problems}"
            raise ProtocolError(msg) from exc
        return start


_start_converter: Final = cattrs.Converter(forbid_extra_keys=True)
