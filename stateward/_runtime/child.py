"""The task process of an isolated task: ``python -m stateward._runtime.child --fd N``,
or :func:`run_forked` in a process forked by a template (:mod:`.template`).

The runtime (:mod:`stateward._runtime.isolation`, the parent) starts this module with
one end of a socket pair as file descriptor ``N`` (or hands that end to the template,
which forks) and sends a start frame naming the task instance and try. The child loads
the task from its Dag file (or takes it as the template loaded it) and runs the attempt
with :func:`~stateward._runtime.attempt.run_attempt`, as the runner does in process, over
a :class:`ChildClient` (whose requests cross the socket; the parent relays them to the
supervisor as the task instance it bound); it reports the rendered fields, then one
final frame (the result and outlet events, or the error) and exits.

The process ends with ``os._exit`` once its outcome is sent, as Airflow's task runner
does: a thread the task left running cannot keep it alive, and atexit handlers do not
run. Before that it kills whatever it started (:mod:`.descendants`). If the runtime
goes away, the child exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import itertools
import logging
import math
import os
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, NoReturn

import trio

from .._dag import Dag, Operator
from .._errors import ProtocolError, TaskLoadError
from .._loader import load_dags
from .._protocol import messages as m
from .._protocol.converter import decode_frame
from .._protocol.frames import (
    ErrorFrame,
    FinalFrame,
    LoadErrorFrame,
    RenderedFrame,
    ResponseFrame,
    ResultFrame,
    StartFrame,
)
from .._protocol.wire import (
    FrameReader,
    FrameWriter,
    check_json,
    decode_hot,
    pack_frame,
    pack_request,
)
from .._records import instance_label
from .._values import check_key, encode_value
from .attempt import AttemptSpec, event_messages, run_attempt
from .capture import forward_output_to_stdout
from .client import attempt_ended_error, raise_error, refuse_in_trio_thread
from .descendants import become_subreaper, die_with_parent, kill_descendants

#: Exit status when the parent went away before the outcome could be reported.
EXIT_PARENT_GONE: Final = 75
#: Where a pidfd is not available: how often the parent's pid is checked.
_PARENT_POLL_SECONDS: Final = 0.5
# Packages whose frames are the runtime's machinery, not the task's code (this module
# runs as __main__).
_MACHINERY: Final = frozenset({"__main__", "stateward", "trio", "outcome"})


class _Slot:
    """A request waiting for its response (from trio code, or from a worker thread)."""

    __slots__ = ("abandoned", "done", "response", "waiter")

    def __init__(self, waiter: threading.Event | None = None) -> None:
        self.done = trio.Event() if waiter is None else None
        self.waiter = waiter
        self.response: Any = None
        #: Its caller stopped waiting (cancelled): it is not handed the reading.
        self.abandoned = False

    def wake(self) -> None:
        """Wake the caller (trio's thread for an async caller): it has its answer, or
        it is to read the socket."""
        if self.done is not None:
            self.done.set()
        if self.waiter is not None:
            self.waiter.set()

    def answer(self, response: Any) -> None:
        self.response = response
        self.wake()


class ChildConnection:
    """The child's end of the socket: requests and the outcome out, responses in.

    No task reads the socket on its own. A caller waiting for a response reads it
    itself if nobody else is reading (it *leads*): an async caller in trio, a worker
    thread with a blocking read. The leader hands each response it reads to the request
    it answers, and when it has its own, hands the reading over to another caller still
    waiting. One call in flight (the common case) therefore costs no task switch and,
    from a worker thread, no hop through trio's thread: the thread writes its request
    and reads its response itself.
    """

    def __init__(self, sock: socket.socket) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._stream = stream
        self._reader = FrameReader(stream, sock)
        self._writer = FrameWriter(stream, sock)
        # Guards _pending and _reading, which worker threads share with trio's thread.
        self._lock = threading.Lock()
        self._pending: dict[int, _Slot] = {}
        # The request whose caller reads the socket now (None: nobody does).
        self._reading: _Slot | None = None
        self._broken: m.ErrorResponse | None = None
        self._ids = itertools.count(1)
        self._finished = False
        self._token: trio.lowlevel.TrioToken | None = None

    async def receive_start(self) -> StartFrame:
        """Read the start frame (before anything else).

        Raises:
            ProtocolError: the first frame is missing or is not a start frame.
        """
        self._token = trio.lowlevel.current_trio_token()
        raw = await self._reader.receive()
        if raw is None:
            msg = "the parent closed the connection before sending the start frame"
            raise ProtocolError(msg)
        frame = decode_frame(raw)
        if not isinstance(frame, StartFrame):
            msg = f"the first frame must be a start frame, got a {type(frame).__name__}"
            raise ProtocolError(msg)
        return frame

    def post(self, data: bytes) -> None:
        """Send the packed frame ``data`` (trio's thread only); exit if the parent is gone."""
        try:
            self._writer.post(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            _parent_gone()

    def pack_request(self, request: m.Request) -> tuple[int, bytes]:
        """Check ``request``'s state values and pack it as a request frame (any thread).

        Each value is checked and encoded once, here, as the supervisor checks it (so a
        tuple is refused in a task process as in process, instead of crossing the wire
        as a list), and its JSON text goes into the frame as it is.

        Returns:
            The request's id, and the frame's bytes.

        Raises:
            StateTypeError: a key or value that cannot be stored (``StateValueError``:
                ``None``, NaN, a bad key); the size limit is the supervisor's.
            ProtocolError: the frame is over the size limit.
        """
        values = m.state_values(request)
        texts = []
        if values:
            key = check_key(getattr(request, "key", None))
            texts = [(name, encode_value(key, value, sys.maxsize)) for name, value in values]
        request_id = next(self._ids)
        return request_id, pack_request(request_id, request, texts)

    def _refusal(self) -> m.ErrorResponse | None:
        if self._finished:
            # A thread the task left running calls after the outcome was reported: refuse
            # it; the outcome must still reach the parent whole.
            detail = "the task already reported its outcome; state can no longer be reached"
            return m.ErrorResponse(m.ErrorType.SHUTTING_DOWN, detail)
        return self._broken

    def submit(self, request_id: int, data: bytes, slot: _Slot) -> None:
        """Send a packed request; ``slot`` gets the response (trio's thread; never raises)."""
        refusal = self._refusal()
        if refusal is not None:
            slot.answer(refusal)
            return
        with self._lock:  # before it is sent: a thread may read the response at once
            self._pending[request_id] = slot
        self.post(data)

    def submit_from_thread(self, request_id: int, data: bytes, slot: _Slot) -> None:
        """:meth:`submit` from a worker thread: the thread sends the frame itself when
        nothing else is being sent, else trio's thread sends it after what is queued."""
        refusal = self._refusal()
        if refusal is not None:
            slot.answer(refusal)
            return
        with self._lock:
            self._pending[request_id] = slot
        try:
            sent = self._writer.post_from_thread(data)
        except trio.BrokenResourceError:
            _parent_gone()
        except trio.ClosedResourceError:  # the outcome went out meanwhile
            sent = False
        if not sent:
            assert self._token is not None
            self._token.run_sync_soon(self._submit_soon, request_id, data, slot)

    def _submit_soon(self, request_id: int, data: bytes, slot: _Slot) -> None:
        refusal = self._refusal()
        if refusal is not None:
            with self._lock:
                self._pending.pop(request_id, None)
            slot.answer(refusal)
            return
        self.post(data)

    async def exchange_frame(self, fields: dict[str, Any]) -> Any:
        """Send a request frame holding ``fields`` as given; return the decoded response.

        For protocol tests (a task that writes raw frames): an ``id`` is added, nothing
        is checked here, and the parent judges the frame as it judges any other.
        """
        request_id = next(self._ids)
        slot = _Slot()
        self.submit(request_id, pack_frame({"kind": "request", "id": request_id, **fields}), slot)
        return await self.wait(slot)

    async def wait(self, slot: _Slot) -> Any:
        """Wait in trio for the response ``slot`` gets, reading the socket while nobody
        else does; return it."""
        try:
            while slot.response is None:
                with self._lock:
                    lead = self._reading is None
                    if lead:
                        self._reading = slot
                if not lead:
                    slot.done = trio.Event()  # set by its answer, or to hand it the reading
                    await slot.done.wait()
                    continue
                try:
                    await self._lead(slot)
                finally:
                    self._hand_over(in_trio=True)
        except BaseException:
            slot.abandoned = True  # cancelled: its answer is dropped when it comes
            self._hand_over(in_trio=True, only_if_idle=True)
            raise
        return slot.response

    def wait_blocking(self, slot: _Slot) -> Any:
        """:meth:`wait` in a worker thread: reads the socket itself (blocking) while
        nobody else does."""
        waiter = slot.waiter
        assert waiter is not None
        while True:
            waiter.clear()  # before looking: an answer after this sets it again
            with self._lock:
                if slot.response is not None:
                    return slot.response
                lead = self._reading is None
                if lead:
                    self._reading = slot
            if not lead:
                waiter.wait()  # if the parent goes away, the process exits
                continue
            try:
                self._lead_blocking(slot)
            finally:
                self._hand_over(in_trio=False)

    async def _lead(self, slot: _Slot) -> None:
        reader = self._reader
        while slot.response is None:
            raw = self._next_frame(in_trio=True)
            if raw is None:
                if self._broken is not None:
                    return
                # In the task process's own trio run, the reader waits for the answer
                # in the socket itself while nothing else could run (wait_alone).
                if not await reader.receive_some():
                    self._ended(in_trio=True)
                continue
            self._dispatch(raw, in_trio=True)

    def wait_alone(self) -> None:
        """Let a caller wait for its answer in the socket itself (``poll``) while trio
        has nothing else to do (:mod:`stateward._protocol.lone`): for the task
        process's own trio run, where nothing but the task needs trio's thread."""
        # Bounded by count alone: each wait is for an answer the runtime is preparing.
        self._reader.wait_alone(self._writer.idle, math.inf)

    def _lead_blocking(self, slot: _Slot) -> None:
        reader = self._reader
        while slot.response is None:
            raw = self._next_frame(in_trio=False)
            if raw is None:
                if self._broken is not None:
                    return
                if not reader.receive_some_blocking():
                    self._ended(in_trio=False)
                continue
            self._dispatch(raw, in_trio=False)

    def _next_frame(self, *, in_trio: bool) -> dict[str, Any] | None:
        try:
            return self._reader.next_frame()
        except ProtocolError as exc:
            self._break(exc, in_trio=in_trio)
            return None

    def _dispatch(self, raw: dict[str, Any], *, in_trio: bool) -> None:
        """Hand the frame ``raw`` to the request it answers."""
        try:
            frame = decode_hot(raw) or decode_frame(raw)
            slot = None
            if isinstance(frame, ResponseFrame):
                with self._lock:
                    slot = self._pending.pop(frame.id, None)
            if slot is None:
                msg = f"the parent sent an unexpected frame: {raw!r:.200}"
                raise ProtocolError(msg)
        except ProtocolError as exc:
            self._break(exc, in_trio=in_trio)
            return
        assert isinstance(frame, ResponseFrame)
        self._deliver(slot, frame.msg, in_trio=in_trio)

    def _deliver(self, slot: _Slot, response: Any, *, in_trio: bool) -> None:
        if in_trio or slot.done is None:
            slot.answer(response)
        else:
            assert self._token is not None
            self._token.run_sync_soon(slot.answer, response)

    def _break(self, exc: ProtocolError, *, in_trio: bool) -> None:
        """The runtime sent what is not a response to a request: every request in
        flight, and every later one, fails with a protocol error naming it."""
        detail = f"the runtime's connection to this task process broke: {exc}"
        self._broken = m.ErrorResponse(m.ErrorType.PROTOCOL, detail)
        self._fail_pending(self._broken, in_trio=in_trio)

    def _fail_pending(self, response: m.ErrorResponse, *, in_trio: bool) -> None:
        with self._lock:
            slots = list(self._pending.values())
            self._pending.clear()
        for slot in slots:
            self._deliver(slot, response, in_trio=in_trio)

    def _ended(self, *, in_trio: bool) -> None:
        """The stream ended: exit, unless the outcome is out (a thread the task left
        running is then refused)."""
        if not self._finished:
            _parent_gone()
        refusal = self._refusal()
        assert refusal is not None
        self._fail_pending(refusal, in_trio=in_trio)

    def _hand_over(self, *, in_trio: bool, only_if_idle: bool = False) -> None:
        """Stop reading (``only_if_idle``: if nobody reads), and wake a caller still
        waiting to read in its turn."""
        with self._lock:
            if only_if_idle and self._reading is not None:
                return
            self._reading = None
            successor = next((s for s in self._pending.values() if not s.abandoned), None)
        if successor is None:
            return
        if in_trio or successor.done is None:
            successor.wake()
        else:
            assert self._token is not None
            self._token.run_sync_soon(successor.wake)

    def finish(self, data: bytes) -> None:
        """Send the packed final frame; :meth:`write_loop` returns once it is out."""
        self.post(data)
        self._finished = True
        self._writer.close()

    async def write_loop(self) -> None:
        """Send what could not be sent at once, until :meth:`finish`."""
        try:
            await self._writer.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            _parent_gone()


def _parent_gone() -> NoReturn:
    # Nobody is left to report to, and a task must not run on unsupervised.
    print("stateward task process: the runtime went away; exiting", file=sys.stderr, flush=True)
    os._exit(EXIT_PARENT_GONE)


class ChildClient:
    """The accessors' client in a task process: requests cross the socket to the parent.

    The parent relays them to the supervisor through the client it bound to this task
    instance; the child's own idea of who it is is never sent. Like the in-process
    client, it is ended with the attempt and then refuses every request.
    """

    __slots__ = ("_connection", "_ended", "_label", "_token", "_try_number")

    def __init__(
        self,
        connection: ChildConnection,
        label: str,
        try_number: int,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self._connection = connection
        self._label = label
        self._try_number = try_number
        self._token = token
        self._ended = False

    def __repr__(self) -> str:
        return f"<ChildClient for task {self._label}>"

    def end(self) -> None:
        """End the attempt: every later request is refused."""
        self._ended = True

    async def request(self, request: m.Request) -> Any:
        """Send ``request`` to the supervisor and return its response.

        Raises:
            AttemptEndedError: the attempt has ended.
            StatewardError: the subclass that matches the refusal.
        """
        if self._ended:
            raise attempt_ended_error(self._label, self._try_number)
        request_id, data = self._connection.pack_request(request)
        slot = _Slot()
        self._connection.submit(request_id, data, slot)
        return _unwrap(await self._connection.wait(slot), request)

    def request_sync(self, request: m.Request, what: str = "state access") -> Any:
        """Send ``request`` from a worker thread and wait for its response.

        Raises:
            AsyncContextError: called from trio's thread (async code).
            AttemptEndedError: the attempt has ended.
        """
        refuse_in_trio_thread(what)
        if self._ended:
            raise attempt_ended_error(self._label, self._try_number)
        request_id, data = self._connection.pack_request(request)
        slot = _Slot(threading.Event())
        self._connection.submit_from_thread(request_id, data, slot)
        return _unwrap(self._connection.wait_blocking(slot), request)


def _unwrap(response: Any, request: m.Request) -> Any:
    if isinstance(response, m.ErrorResponse):
        raise_error(response, request)
    return response


# -- running the task ----------------------------------------------------------------------


def load_task(start: StartFrame, dags: Mapping[str, Dag] | None = None) -> Operator:
    """Load the task ``start`` names from its Dag file (``dags``: the file's Dags, as
    the fork server loaded them before forking this process).

    Raises:
        TaskLoadError: the file cannot be loaded, or defines no such Dag or task; the
            message names the file and the task.
    """
    label = instance_label(start.dag_id, start.task_id, start.map_index)
    where = f"cannot load task {label} in its task process from {start.dag_file!r}"
    try:
        if dags is None:
            dags = load_dags(start.dag_file)
    except TaskLoadError as exc:
        msg = f"{where}: {exc}"
        raise TaskLoadError(msg, path=start.dag_file) from exc
    dag = dags.get(start.dag_id)
    if dag is None:
        msg = (
            f"{where}: the file defines no Dag {start.dag_id!r} at module level (it defines "
            f"{sorted(dags)}); a Dag whose tasks run isolated must be a module-level global "
            "of its file (dag.fileloc)"
        )
        raise TaskLoadError(msg, path=start.dag_file)
    task = dag.tasks.get(start.task_id)
    if task is None:
        msg = (
            f"{where}: Dag {start.dag_id!r} has no task {start.task_id!r} there "
            f"(it has {sorted(dag.tasks)})"
        )
        raise TaskLoadError(msg, path=start.dag_file)
    return task


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it; what it cannot is recorded as its repr()."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): _plain(v) for k, v in value.items()}
    return repr(value)


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


async def run_task(
    task: Operator, start: StartFrame, client: ChildClient, connection: ChildConnection
) -> tuple[Any, tuple[m.AddAssetEvent, ...]]:
    """Run the attempt as the runner runs one in process; return the result and events."""
    offset = start.clock_offset

    def wall_clock() -> float:
        return time.time() + offset

    spec = AttemptSpec(
        task, start.run_id, start.params, start.map_index, start.try_number, start.max_tries,
        start.assets, _seconds(start.task_retention), _seconds(start.asset_retention),
        wall_clock,
    )  # fmt: skip

    def report(rendered: dict[str, Any]) -> None:
        connection.post(pack_frame(RenderedFrame(_plain(rendered))))

    # The parent applies execution_timeout, to the whole process.
    result, outlet_events = await run_attempt(
        spec, client, on_rendered=report, enforce_timeout=False
    )
    return result, tuple(event_messages(outlet_events))


def _is_machinery(module: object) -> bool:
    return isinstance(module, str) and module.partition(".")[0] in _MACHINERY


def _error_frame(exc: BaseException) -> ErrorFrame:
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    # Start the traceback in the task's own code, as an in-process one reads.
    tb = exc.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_globals.get("__name__")):
        tb = tb.tb_next
    shown = "".join(traceback.format_exception(kind, exc, tb or exc.__traceback__))
    try:
        message = str(exc)
    except Exception as failure:  # the report must go out whatever the exception does
        message = f"<str() of the exception failed: {failure!r}>"
    return ErrorFrame(name, message, shown)


async def _outcome(
    start: StartFrame, connection: ChildConnection, dags: Mapping[str, Dag] | None
) -> FinalFrame:
    """The final frame: the task's result and events, its error, or why it did not load."""
    label = instance_label(start.dag_id, start.task_id, start.map_index)
    try:
        task = load_task(start, dags)
    except TaskLoadError as exc:
        return LoadErrorFrame(str(exc))
    client = ChildClient(connection, label, start.try_number, trio.lowlevel.current_trio_token())
    try:
        value, events = await run_task(task, start, client, connection)
        try:
            check_json(value, f"the result of {label}")
        except (TypeError, ValueError) as exc:
            msg = (
                f"{exc}. An isolated task's result crosses the process boundary as JSON: "
                "return a JSON value, or keep the object in task state or a file"
            )
            raise type(exc)(msg) from None
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        return _error_frame(exc)
    return ResultFrame(value, events)


def _pack_final(frame: FinalFrame) -> tuple[bytes, bool]:
    """The final frame's bytes, and whether it reports success.

    A result that cannot be sent (too large, an event's extra not JSON) is reported as
    the error it is instead.
    """
    try:
        return pack_frame(frame), isinstance(frame, ResultFrame)
    except ProtocolError as exc:
        return pack_frame(_error_frame(exc)), False


async def serve(
    sock: socket.socket,
    dags: Mapping[str, Dag] | None = None,
    end: Callable[[int], NoReturn] | None = None,
) -> int:
    """Run the attempt the start frame on ``sock`` names; return the exit code (0: it
    succeeded).

    Args:
        sock: The socket to the runtime.
        dags: The Dag file's Dags as already loaded (``None``: load the file).
        end: Called with the exit code as soon as the final frame is sent, from
            inside trio (a task process passes :func:`end_process`: nothing is left to
            run, so trio's teardown is skipped). Given, this trio run is the task
            process's own, and an async caller alone in it may wait for its answer in
            the socket itself.
    """
    connection = ChildConnection(sock)
    start = await connection.receive_start()
    if end is not None:
        forward_output_to_stdout()
        connection.wait_alone()
    async with trio.open_nursery() as nursery:
        writer_done = trio.Event()

        async def write() -> None:
            await connection.write_loop()
            writer_done.set()

        nursery.start_soon(write)
        data, succeeded = _pack_final(await _outcome(start, connection, dags))
        connection.finish(data)
        await writer_done.wait()
        if end is not None:
            end(0 if succeeded else 1)
        nursery.cancel_scope.cancel()
    return 0 if succeeded else 1


def _die_with_parent() -> None:
    # The child exits at once when the runtime's process dies, even while trio's thread
    # is blocked (the socket's EOF is seen only by a caller reading it): a daemon thread
    # waits on a pidfd of the parent process, which the kernel makes readable when that
    # whole process has exited. PR_SET_PDEATHSIG is not used: it fires when the *thread*
    # that started the child exits, and trio starts processes from cached worker threads
    # that exit after 10 s idle, which killed every isolated attempt at about 10 s.
    parent = os.getppid()
    watched = _watch_parent(parent)
    if os.getppid() != parent or not watched:  # it died before the watch began
        os._exit(EXIT_PARENT_GONE)


def _watch_parent(parent: int) -> bool:
    """Start the thread that ends this process when ``parent`` exits; False if gone."""
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # not Linux >= 5.3: poll the parent's pid instead
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll():
                pass
        else:
            while os.getppid() == parent:
                time.sleep(_PARENT_POLL_SECONDS)
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="stateward-parent-watch", daemon=True).start()
    return True


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the task process on the socket ``--fd`` names, then exit."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description="stateward's task process (started by it)"
    )
    parser.add_argument("--fd", type=int, required=True, help="the socket to the runtime")
    args = parser.parse_args(argv)
    # Processes the task starts must not hold the runtime's socket open after we exit.
    os.set_inheritable(args.fd, False)
    _die_with_parent()
    become_subreaper()
    faulthandler.enable()  # a crash in native code prints the Python stack to stderr
    end_process(trio.run(serve, socket.socket(fileno=args.fd), None, end_process))


def end_process(code: int) -> NoReturn:
    """Flush what the task buffered, kill what it started, and exit with ``code`` at
    once: no interpreter shutdown, no ``atexit`` handlers, no thread left to wait for
    (the parent already has the outcome)."""
    _flush()
    kill_descendants()
    os._exit(code)


def _flush() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the task may have closed them
            if stream is not None:
                stream.flush()


def run_forked(sock: socket.socket, *, parent: int, dags: Mapping[str, Dag] | None) -> NoReturn:
    """Run the task process in a child the fork server (:mod:`.template`) just forked.

    Args:
        sock: The socket to the runtime.
        parent: The fork server's pid (it has enabled ``faulthandler``).
        dags: The Dag file's Dags as the fork server loaded them (``None``: load it here).

    The process leads a session of its own (``execution_timeout`` signals its process
    group), dies with the fork server (which dies with the runtime), and adopts what it
    starts (a child subreaper), so that it can kill all of it before it exits.
    """
    become_forked(parent)
    serve_forked(sock, dags)


def become_forked(parent: int) -> None:
    """The part of :func:`run_forked` that needs no socket (a spare task process does it
    while it waits for one): lead a session, die with ``parent``, adopt what it starts."""
    os.setsid()
    # The fork server exits when the runtime does, and this process gets SIGKILL when
    # the fork server exits: no thread is needed to watch the runtime.
    if not die_with_parent(parent):
        os._exit(EXIT_PARENT_GONE)
    become_subreaper()


def serve_forked(sock: socket.socket, dags: Mapping[str, Dag] | None) -> NoReturn:
    """The rest of :func:`run_forked`, once :func:`become_forked` has run: serve the
    attempt on ``sock`` and end the process."""
    os.set_inheritable(sock.fileno(), False)
    end_process(trio.run(serve, sock, dags, end_process))


if __name__ == "__main__":
    main()
