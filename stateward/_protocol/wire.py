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
import select
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from .._errors import ProtocolError
from .._values import depth_problem, find_non_json, shorten
from . import messages as m
from .converter import encode, encode_frame
from .frames import Frame, RequestFrame, ResponseFrame
from .lone import LoneWait, lone_wait
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
    text = _hot_request(request_id, request, values)
    if text is not None:
        return pack_text(text, "request")
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
    hot = _hot_response(request_id, response)
    if hot is not None:
        return pack_text(hot, "response")
    try:
        text = _ENCODER.encode(encode(response))
    except (TypeError, ValueError) as exc:
        msg = f"a response frame must hold JSON only: {exc}"
        raise ProtocolError(msg) from exc
    return pack_text(f'{{"kind":"response","id":{request_id},"msg":{text}}}', "response")


# -- the hot frames ------------------------------------------------------------------------
# A state call's request and response, packed and read without the converter: the same
# bytes and the same objects as the general path (tests compare the two), for the few
# frames every get and set sends. Anything else, including every frame these functions
# are not sure of, takes the general path, with its strictness and its error messages.

_string: Final = json.encoder.encode_basestring  # what _ENCODER does with a str


def _hot_request(
    request_id: int, request: Request, values: Sequence[tuple[str, str]]
) -> str | None:
    """A get's or a set's request frame as JSON text; ``None``: not one of those."""
    if type(request) is m.GetTaskState:
        if type(request.key) is not str or values:
            return None
        key = _string(request.key)
        return f'{{"kind":"request","id":{request_id},"msg":{{"key":{key},"type":"GetTaskState"}}}}'
    if type(request) is m.SetTaskState:
        expires = request.expires_at
        if (
            type(request.key) is not str
            or len(values) != 1
            or values[0][0] != "value"
            or not (expires is None or (type(expires) is float and math.isfinite(expires)))
        ):
            return None
        key, value = _string(request.key), values[0][1]
        after = "null" if expires is None else float.__repr__(expires)
        return (
            f'{{"kind":"request","id":{request_id},"msg":{{"key":{key},"expires_at":{after},'
            f'"type":"SetTaskState","value":{value}}}}}'
        )
    return None


def _hot_response(request_id: int, response: Response) -> str | None:
    """An answer to a get or a set as a response frame's JSON text; ``None``: not one of
    those, or not sure (its value is then refused or encoded by the general path)."""
    if type(response) is m.OkResponse:
        return f'{{"kind":"response","id":{request_id},"msg":{{"type":"OkResponse"}}}}'
    if type(response) is m.TaskStateResult and type(response.key) is str:
        value = _json_text(response.value)
        if value is None:
            return None
        key = _string(response.key)
        return (
            f'{{"kind":"response","id":{request_id},"msg":{{"key":{key},"value":{value},'
            '"type":"TaskStateResult"}}'
        )
    return None


def _json_text(value: object) -> str | None:
    """``_ENCODER.encode(value)``, cheaper for a scalar; ``None`` if it is not JSON."""
    try:
        if type(value) is int:
            return int.__repr__(value)
        if type(value) is str:
            return _string(value)
        return "null" if value is None else _ENCODER.encode(value)
    except (TypeError, ValueError):  # not JSON, or an int over the digits limit
        return None


def decode_hot(data: dict[str, Any]) -> RequestFrame | ResponseFrame | None:
    """The frame ``data`` is, if it is a get's or a set's request or the answer to one
    and is exactly as :func:`~stateward._protocol.converter.decode_frame` accepts it;
    else ``None``: decode it with ``decode_frame`` (which says what is wrong with it).

    Returns the same object ``decode_frame`` returns for it.
    """
    msg = data.get("msg")
    request_id = data.get("id")
    if len(data) != 3 or type(msg) is not dict or type(request_id) is not int:
        return None
    kind, tag, key = data.get("kind"), msg.get("type"), msg.get("key")
    if kind == "request":
        if tag == "GetTaskState" and len(msg) == 2 and type(key) is str:
            return RequestFrame(request_id, m.GetTaskState(key))
        if tag == "SetTaskState" and type(key) is str and "value" in msg:
            expires = msg.get("expires_at")
            # An int (a hand-written frame) takes the general path, which converts it.
            if len(msg) == 3 + ("expires_at" in msg) and (
                expires is None or type(expires) is float
            ):
                return RequestFrame(request_id, m.SetTaskState(key, msg["value"], expires))
    elif kind == "response":
        if tag == "OkResponse" and len(msg) == 1:
            return ResponseFrame(request_id, _OK)
        if tag == "TaskStateResult" and len(msg) == 3 and type(key) is str and "value" in msg:
            return ResponseFrame(request_id, m.TaskStateResult(key, msg["value"]))
    return None


_OK: Final = m.OkResponse()


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


# One decoder for every frame (json.loads with an argument builds one per call).
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant)

#: Frames a :class:`FrameReader` returns without waiting before it lets other tasks run
#: (a peer that sends without pause must not starve them).
_FRAMES_PER_CHECKPOINT: Final = 16


class FrameReader:
    """Reads frames from a byte stream (one reader at a time per stream).

    Args:
        stream: Where frames come from.
        sock: The stream's socket, read directly: a read that finds data does not
            yield to the scheduler (a trio stream's does, which costs a scheduling
            round per frame). Either way one frame in :data:`_FRAMES_PER_CHECKPOINT`
            returned without waiting yields.

    :meth:`receive` reads and waits in trio; :meth:`receive_some` (in trio) or
    :meth:`receive_some_blocking` (in a worker thread) and :meth:`next_frame` let a
    caller read when it wants and take the frames out of what was read, as
    :meth:`receive` does.
    """

    __slots__ = ("_buffer", "_drained", "_socket", "_stream", "_unyielded", "lone", "size")

    def __init__(self, stream: trio.abc.ReceiveStream, sock: socket.socket | None = None) -> None:
        self._stream = stream
        self._socket = sock
        self._buffer = bytearray()
        self._unyielded = 0
        # The last read had less than it asked for: the socket is most likely empty now,
        # so the next read waits before it tries (a read that finds nothing costs a
        # system call and an exception, once per frame of a request-response exchange).
        self._drained = False
        #: The size in bytes of the frame returned last.
        self.size = 0
        #: Set by :meth:`wait_alone`: wait for the socket in ``poll`` while trio has
        #: nothing else to do (:mod:`stateward._protocol.lone`).
        self.lone: LoneWait | None = None

    def wait_alone(self, may_wait: Callable[[], bool], budget: float) -> None:
        """From now on, wait for frames in the socket itself while trio has nothing
        else to do and ``may_wait()`` (see :func:`~stateward._protocol.lone.lone_wait`,
        ``budget`` its seconds); a reader without a socket waits in trio."""
        if self._socket is not None:
            self.lone = lone_wait(self._socket, may_wait, budget)

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
            if self.lone is not None:
                self.lone.yielded()
        while (frame := self.next_frame()) is None:
            if not await self.receive_some():
                return None
        return frame

    async def receive_some(self) -> bool:
        """Read what the stream has (waiting for something) into the buffer; False at
        its end."""
        try:
            if self._socket is None:
                chunk = await self._stream.receive_some(self.wanted())
            else:
                chunk = await self._receive_direct(self.wanted())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        self._buffer += chunk
        return bool(chunk)

    def wanted(self) -> int:
        """How many bytes to ask the stream for: at least the rest of the next frame."""
        buffered = len(self._buffer)
        if buffered < _HEADER.size:
            return _READ_BYTES
        size: int = _HEADER.unpack_from(self._buffer)[0]
        return max(_READ_BYTES, _HEADER.size + min(size, MAX_FRAME_BYTES) - buffered)

    def receive_some_blocking(self) -> bool:
        """:meth:`receive_some` from a worker thread, on the socket (blocking, however
        long it takes: the caller has nothing else to do)."""
        sock = self._socket
        assert sock is not None
        size = self.wanted()
        poller = None
        while True:
            if self._drained:
                if poller is None:
                    poller = select.poll()
                    poller.register(sock, select.POLLIN)
                poller.poll()
            try:
                chunk = sock.recv(size)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError:  # closed here, or reset by the peer
                chunk = b""
            self._drained = len(chunk) < size
            self._buffer += chunk
            return bool(chunk)

    def next_frame(self) -> dict[str, Any] | None:
        """Take the next whole frame out of what is buffered; ``None``: not all there yet.

        Raises:
            ProtocolError: as :meth:`receive`.
        """
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buffer)
        if size > MAX_FRAME_BYTES:
            msg = f"a frame announced {size} bytes, over the limit of {MAX_FRAME_BYTES} (16 MiB)"
            raise ProtocolError(msg)
        end = _HEADER.size + size
        if len(buffer) < end:
            return None
        body = bytes(buffer[_HEADER.size : end])
        del buffer[:end]
        self.size = end
        try:
            frame = _DECODER.decode(body.decode())
        except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting
            msg = f"a frame is not UTF-8 JSON ({type(exc).__name__}: {exc}): {body[:60]!r}"
            raise ProtocolError(msg) from exc
        if not isinstance(frame, dict):
            msg = f"a frame must be a JSON object, got {type(frame).__name__} {frame!r:.60}"
            raise ProtocolError(msg)
        return frame

    async def _receive_direct(self, size: int) -> bytes:
        sock = self._socket
        assert sock is not None
        while True:
            if self._drained:
                lone = self.lone
                if lone is not None:
                    await trio.lowlevel.checkpoint_if_cancelled()
                if lone is None or not lone.wait():
                    self._unyielded = 0
                    await trio.lowlevel.wait_readable(sock)
                    if lone is not None:
                        lone.yielded()
            try:
                chunk = sock.recv(size)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError as exc:  # closed here (EBADF), or reset by the peer
                raise trio.BrokenResourceError(str(exc)) from exc
            self._drained = len(chunk) < size
            return chunk


#: How much a read asks for at least.
_READ_BYTES: Final = 65536


class ByteBudget:
    """Bytes held on behalf of a peer, under a limit.

    :meth:`acquire` waits while what is held plus the new bytes would pass the limit,
    unless nothing is held: one item larger than the limit still passes, alone.

    Args:
        limit: The most bytes held at once (but for one larger item).
    """

    __slots__ = ("_changed", "_waiting", "held", "limit", "peak")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The bytes held now.
        self.held = 0
        #: The most bytes held at once so far.
        self.peak = 0
        self._changed = trio.Event()
        self._waiting = 0

    def fits(self, size: int) -> bool:
        """Whether :meth:`acquire` of ``size`` would hold them without waiting."""
        return not self.held or self.held + size <= self.limit

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` more bytes fit under the limit (or nothing is held); hold them."""
        while not self.fits(size):
            changed = self._changed
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1
        self.add(size)

    def add(self, size: int) -> None:
        """Hold ``size`` more bytes without waiting (what was held is now known to be more)."""
        self.held += size
        if self.held > self.peak:
            self.peak = self.held

    def release(self, size: int) -> None:
        """Stop holding ``size`` bytes; wake whoever waits for room."""
        if not size:
            return
        self.held -= size
        if self._waiting:  # a new Event only when someone waits on this one
            self._changed.set()
            self._changed = trio.Event()


class FrameWriter:
    """Writes frames in order, without a task switch when it can.

    A frame goes out at once when the socket takes it whole and nothing is queued before
    it (the common case: one request or response in flight); otherwise it is queued for
    :meth:`run`, the one writer task, so frames never interleave. :attr:`budget` counts
    the bytes queued, and the room held by :meth:`reserve` for frames not yet posted.

    A worker thread may also write (:meth:`post_from_thread`, a task process's plain-function
    task): it sends its frame itself when nobody else is sending and nothing is queued.
    Whoever sends holds the socket's send side (``_sending``) without holding the lock,
    so a thread that waits for the peer to read never holds back trio's thread, whose
    frames are queued behind it meanwhile.

    Args:
        stream: Where frames go.
        sock: The stream's socket, for the direct writes; ``None``: always queue.
        limit: The most bytes queued and reserved before :meth:`reserve` waits.
    """

    __slots__ = (
        "_closed", "_lock", "_queue", "_sending", "_socket", "_stream", "_token", "_wake",
        "budget",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.SendStream,
        sock: socket.socket | None = None,
        limit: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._stream = stream
        self._socket = sock
        # Guards _queue, _sending and _closed (held only for a few instructions, never
        # while sending).
        self._lock = threading.Lock()
        self._queue: deque[bytes] = deque()
        # Someone sends now: a poster, a worker thread, or run().
        self._sending = False
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
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

    def idle(self) -> bool:
        """Whether nothing is being sent or waits to be (from any thread)."""
        with self._lock:
            return not self._sending and not self._queue

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
        with self._lock:
            if self._closed:
                msg = "the frame writer is closed"
                raise trio.ClosedResourceError(msg)
            direct = not self._sending and not self._queue and self._socket is not None
            if direct:
                self._sending = True
        if direct:
            assert self._socket is not None
            try:
                sent = self._socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                with self._lock:
                    self._sending = False
                raise trio.BrokenResourceError(str(exc)) from exc
            data = data[sent:]
        with self._lock:
            if data:
                # The rest of a frame goes first: nothing was queued before it.
                (self._queue.appendleft if direct else self._queue.append)(data)
                self.budget.add(len(data))
            if direct:
                self._sending = False
            wake = bool(self._queue) and not self._sending
        if wake:
            self._wake.set()

    def post_from_thread(self, data: bytes) -> bool:
        """Send ``data`` from a worker thread, blocking until the socket took it all, if
        nothing is being sent or queued; else send nothing and return False (post it
        through trio's thread then, where it is queued in turn).

        Raises:
            trio.BrokenResourceError: the other side is gone.
            trio.ClosedResourceError: :meth:`close` was called.
        """
        sock = self._socket
        with self._lock:
            if self._closed:
                msg = "the frame writer is closed"
                raise trio.ClosedResourceError(msg)
            if self._sending or self._queue or sock is None or self._token is None:
                return False
            self._sending = True
        try:
            _send_blocking(sock, data)
        finally:
            with self._lock:
                self._sending = False
                wake = bool(self._queue) or self._closed
            if wake:  # trio's thread queued frames behind this one meanwhile
                self._token.run_sync_soon(self._poke)
        return True

    def _poke(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Take no more frames; :meth:`run` returns once the queued ones are sent."""
        with self._lock:
            self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Send queued frames, several at once when they pile up, until closed.

        Raises:
            trio.BrokenResourceError: the other side is gone.
        """
        self._token = trio.lowlevel.current_trio_token()
        while True:
            with self._lock:
                batch = b"" if self._sending else b"".join(self._queue)
                if batch:
                    self._queue.clear()
                    self._sending = True
                elif self._closed and not self._sending and not self._queue:
                    return
                wake = self._wake = trio.Event()
            if not batch:
                await wake.wait()
                continue
            try:
                await self._stream.send_all(batch)
            finally:
                with self._lock:
                    self._sending = False
            self.budget.release(len(batch))


def _send_blocking(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data`` on the non-blocking ``sock`` from a worker thread, waiting for
    room as long as it takes (the peer reads, or goes away)."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            poller.poll()
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc


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
