"""The parent side of a task process: an attempt of an isolated task.

With ``isolation="process"``, :func:`run_isolated` runs the attempt in a child process,
``python -m stateward._runtime.child``, connected by a socket pair. The child loads the
task from its Dag file (:attr:`~stateward.Dag.fileloc`), so nothing is pickled, and runs
it with :func:`stateward._runtime.attempt.run_attempt` as the runner does in process.
This module starts the child, relays its requests to the supervisor through the
:class:`~stateward._runtime.client.SupervisorClient` bound to the task instance (the
child never says who it is: a frame cannot change its identity), and turns how the
child ended into the attempt's outcome. A child that dies, however it dies, fails only
its own attempt; ``execution_timeout`` kills it. The child's stdout and stderr are pipes
read here and written to this process's streams in the attempt's context, so they are
echoed as before and kept in the attempt's log (:mod:`stateward._runtime.capture`).

The frames are described in :mod:`stateward._protocol.frames`, their wire in
:mod:`stateward._protocol.wire`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

import trio

from .._assets import Asset, AssetAlias
from .._context.context import OutletEventAccessors
from .._dag import Operator
from .._errors import (
    ProtocolError,
    StatewardError,
    TaskLoadError,
    TaskProcessError,
    TaskTimeoutError,
)
from .._nursery import raise_sole
from .._protocol import messages as m
from .._protocol.converter import decode_frame
from .._protocol.frames import (
    ErrorFrame,
    FinalFrame,
    LoadErrorFrame,
    RenderedFrame,
    RequestFrame,
    ResultFrame,
    StartFrame,
)
from .._protocol.wire import (
    MAX_FRAME_BYTES,
    MAX_QUEUED_BYTES,
    ByteBudget,
    FrameReader,
    FrameWriter,
    check_json,
    decode_hot,
    pack_frame,
    pack_response,
)
from .attempt import AttemptSpec
from .capture import LineSplitter
from .client import SupervisorClient
from .forkserver import ForkedProcess, ForkServers, child_env, fork_server_available
from .supervisor import Envelope, error_response

#: The most requests of one child served at once; more wait to be read.
MAX_IN_FLIGHT: Final = 64
#: The most bytes of one child's request frames held while they are served; more wait
#: to be read.
MAX_REQUEST_BYTES: Final = 32 * 1024 * 1024
#: The most bytes of responses held for one child: sent but not yet read by it, or
#: reserved for responses being built. A listing reserves a whole frame
#: (``MAX_FRAME_BYTES``) before it is served, so at most two
#: are built at once; any other response holds one value at most.
MAX_RESPONSE_BYTES: Final = MAX_QUEUED_BYTES
#: The requests whose response can be as large as a frame (every key of a scope).
_LISTINGS: Final = (m.ListTaskState, m.ListAssetStateByName, m.ListAssetStateByUri, m.ListState)
#: The reads the relay serves at once when the child has nothing else in flight.
_READS: Final = frozenset({m.GetTaskState, m.GetAssetStateByName, m.GetAssetStateByUri})
#: The most seconds the relay waits for a child's next request in ``poll`` (not in
#: trio's scheduler) before it waits in trio (:mod:`stateward._protocol.lone`).
LONE_WAIT_SECONDS: Final = 0.002
#: Seconds a child has to exit after SIGTERM (on a timeout) or after reporting its
#: outcome, before it is killed with SIGKILL.
KILL_GRACE_SECONDS: Final = 5.0
#: The module the child runs (``python -m``).
CHILD_MODULE: Final = "stateward._runtime.child"

_SIGNAL_HINTS: Final = {
    "SIGKILL": " (sent by another process, or by the kernel's out-of-memory killer)",
    "SIGSEGV": " (a segmentation fault: a crash in native code)",
    "SIGBUS": " (a bus error: a crash in native code)",
    "SIGABRT": " (aborted: a fatal error in native code or in the interpreter)",
}


#: A task process: started fresh, or forked from a template.
TaskProcess = trio.Process | ForkedProcess

# -- the parent side -------------------------------------------------------------------------


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a task process, shown as the cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def _refusal(exc: Exception) -> m.ErrorResponse:
    """The error response reporting ``exc``, raised while a request was served."""
    if type(exc) is StatewardError:  # an INTERNAL answer: keep its text as it was
        return m.ErrorResponse(m.ErrorType.INTERNAL, str(exc))
    return error_response(exc)


_EVENTS_REFUSED: Final = m.ErrorResponse(
    m.ErrorType.SCOPE_DENIED,
    "a task process emits asset events through outlet_events; they are recorded "
    "from its result when it succeeds, not sent as requests",
)


async def _relay(client: Any, request: m.Request) -> m.Response:
    """Serve one request of the child through a client that only has ``request``."""
    try:
        response: m.Response = await client.request(request)
    except StatewardError as exc:
        return _refusal(exc)
    return response


def _answer_of(client: SupervisorClient, envelope: Envelope) -> m.Response:
    """The response to send for an answered envelope: its answer, or its error."""
    try:
        response: m.Response = client.result(envelope)
    except Exception as exc:  # runs in the supervisor's task: nothing may escape
        return _refusal(exc)
    return response


def _read_request_error(raw: dict[str, Any], exc: ProtocolError) -> int:
    """The id of a request frame that cannot be decoded; raise if it has no ``id``.

    A request whose message (or envelope) is bad is answered, correlated by its id;
    without an int id there is nobody to answer, so the stream is corrupt.
    """
    request_id = raw.get("id")
    if raw.get("kind") != "request" or type(request_id) is not int:
        raise exc
    return request_id


def _pack_response(request_id: int, response: m.Response) -> bytes:
    try:
        return pack_response(request_id, response)
    except ProtocolError as exc:  # e.g. a listing over the frame limit
        refusal = m.ErrorResponse(m.ErrorType.PROTOCOL, f"the response is refused: {exc}")
        return pack_response(request_id, refusal)


async def serve_child(
    stream: trio.abc.Stream,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None] = lambda fields: None,
    *,
    sock: socket.socket | None = None,
) -> FinalFrame | None:
    """Relay a task process's requests to the supervisor until it reports its outcome.

    Args:
        stream: The parent's end of the connection (the start frame already sent).
        client: The client bound to the task instance: every request is served as it.
            A :class:`SupervisorClient` is handed each request as it is read and
            calls back with the answer, which is sent at once: no task per request
            (a get with nothing else of the child's in flight is served in this task,
            :meth:`SupervisorClient.read_now`).
            Any other object with an async ``request`` (tests stand one in) is awaited
            in a task per request.
        on_rendered: Called with the rendered template fields when they arrive.
        sock: The stream's socket, read and written directly (no scheduling round
            per frame).

    Returns:
        The final frame (a result, an error, or a load error), or ``None`` if the
        stream ended first.

    Raises:
        ProtocolError: the stream is corrupt (the caller kills the child).
    """
    reader = FrameReader(stream, sock)
    writer = FrameWriter(stream, sock, MAX_RESPONSE_BYTES)
    # Between requests, wait for the next one in the socket itself while trio has
    # nothing else to do (no scheduling round per request); a child that takes long to
    # ask again is waited for in trio.
    reader.wait_alone(writer.idle, LONE_WAIT_SECONDS)
    # What the parent holds for the child is bounded whatever the child does: requests
    # in flight by count and by bytes (past either, its requests are not read), and
    # responses by bytes (room is reserved before a request is served, so a child that
    # does not read holds back the serving of its requests, not just their sending).
    in_flight = ByteBudget(MAX_IN_FLIGHT)
    requests = ByteBudget(MAX_REQUEST_BYTES)
    direct = isinstance(client, SupervisorClient)
    serving = True
    rendered_seen = False

    def reply(request_id: int, response: m.Response, size: int, room: int) -> None:
        # In trio's thread, in the supervisor's task or the reader's: never raises.
        in_flight.release(1)
        requests.release(size)
        if not serving:  # the child reported or is gone: nobody reads this
            writer.release(room)
            return
        # If the child is gone, how it ended is reported by its exit.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            writer.post(_pack_response(request_id, response), reserved=room)

    def answered(request_id: int, size: int, room: int) -> Callable[[Envelope], None]:
        return lambda envelope: reply(request_id, _answer_of(client, envelope), size, room)

    async def answer(request_id: int, request: m.Request, size: int, room: int) -> None:
        reply(request_id, await _relay(client, request), size, room)

    async def write() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await writer.run()  # the child is gone; how it ended is reported by its exit

    async def serve(frame: RequestFrame, nursery: trio.Nursery) -> None:
        size = reader.size
        room = MAX_FRAME_BYTES if isinstance(frame.msg, _LISTINGS) else 0
        if in_flight.fits(1) and requests.fits(size) and writer.budget.fits(room):
            in_flight.add(1)  # the common case, without three awaits
            requests.add(size)
            writer.budget.add(room)
        else:
            await in_flight.acquire(1)
            await requests.acquire(size)
            await writer.reserve(room)
        if isinstance(frame.msg, m.AddAssetEvent):
            reply(frame.id, _EVENTS_REFUSED, size, room)
        elif direct:
            try:
                if type(frame.msg) in _READS and in_flight.held == 1:
                    # Nothing else of the child's in flight: its writes are all answered,
                    # so a read served now, without a hop to the supervisor's task and a
                    # batch of its own, sees them as a queued one would.
                    await client.read_now(frame.msg, answered(frame.id, size, room))
                else:
                    client.submit(frame.msg, answered(frame.id, size, room))
            except StatewardError as exc:  # the attempt ended, the runtime is closing
                reply(frame.id, _refusal(exc), size, room)
        else:
            nursery.start_soon(answer, frame.id, frame.msg, size, room)

    async def read(nursery: trio.Nursery) -> FinalFrame | None:
        nonlocal rendered_seen
        while True:
            raw = await reader.receive()
            if raw is None:
                return None
            try:
                frame = decode_hot(raw) or decode_frame(raw)
            except ProtocolError as exc:
                refusal = _pack_response(_read_request_error(raw, exc), error_response(exc))
                await writer.reserve(len(refusal))
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    writer.post(refusal, reserved=len(refusal))
                continue
            match frame:
                case RequestFrame():
                    await serve(frame, nursery)
                case RenderedFrame(fields=fields):
                    if rendered_seen:
                        # It starts execute's clock: a second one would push the timeout back.
                        msg = "a second rendered frame (one attempt renders once)"
                        raise ProtocolError(msg)
                    rendered_seen = True
                    on_rendered(fields)
                case ResultFrame() | ErrorFrame() | LoadErrorFrame():
                    return frame
                case _:
                    msg = (
                        f"a task process sent a {type(frame).__name__}, which only its parent sends"
                    )
                    raise ProtocolError(msg)

    final: FinalFrame | None = None
    corrupt: ProtocolError | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                final = await read(nursery)
            except ProtocolError as exc:
                corrupt = exc  # raised below, not wrapped in the nursery's exception group
            # The child reported, is gone, or is to be killed: nobody waits for the rest.
            nursery.cancel_scope.cancel()
    finally:
        serving = False
    if corrupt is not None:
        raise corrupt
    return final


def describe_exit(returncode: int) -> str:
    """How a process ended, for messages: ``killed by SIGKILL (...)``, ``exited with code 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}{_SIGNAL_HINTS.get(name, '')}"
    return f"exited with code {returncode}"


def _signal_group(process: TaskProcess, sig: signal.Signals) -> None:
    # The child leads its own process group: stop what it started along with it, also
    # after the child itself has exited (the group's id is not reused while any process
    # the child started is still in it).
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        if process.returncode is None:
            process.send_signal(sig)


async def _exited(process: TaskProcess) -> None:
    """Wait until ``process`` has exited; a forked one need not have been reaped yet
    (its template reports how it ended later: ``returncode`` may still be ``None``)."""
    if isinstance(process, ForkedProcess):
        await process.exited()
    else:
        await process.wait()


async def _stop(process: TaskProcess, *, grace: float, reaped: bool = True) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds; wait until
    it has exited, and (``reaped``) until how it ended is known."""
    with trio.CancelScope(shield=True):
        if grace > 0:
            _signal_group(process, signal.SIGTERM)
            with trio.move_on_after(grace):
                await _exited(process)
        _signal_group(process, signal.SIGKILL)
        if reaped:
            await process.wait()
        else:
            await _exited(process)


#: Seconds to read what an exited child had already written, when a process it started
#: still holds the socket open (so no end of stream comes).
EXIT_DRAIN_SECONDS: Final = 1.0


async def _serve_until_exit(
    process: TaskProcess,
    stream: trio.SocketStream,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None],
    sock: socket.socket,
) -> FinalFrame | None:
    """Serve the child until its final frame, its end of stream, or its exit (then a
    short drain): a process the child started may hold the socket open after it died."""
    final: FinalFrame | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def watch_exit() -> None:
                await _exited(process)
                await trio.sleep(EXIT_DRAIN_SECONDS)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_exit)
            final = await serve_child(stream, client, on_rendered, sock=sock)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_sole(group)  # serve_child's own error (a broken protocol)
    return final


def _stdout() -> TextIO:
    return sys.stdout


def _stderr() -> TextIO:
    return sys.stderr


class _Echo:
    """Writes what the child writes to a pipe to this process's stream, decoded.

    The stream is the runtime's proxy (:mod:`stateward._runtime.capture`), and this runs
    in the attempt's context: the child's output is echoed as before, and kept in the
    attempt's log.
    """

    def __init__(self, pipe: trio.abc.ReceiveStream, stream: Callable[[], TextIO]) -> None:
        self.pipe = pipe
        self.done = trio.Event()
        self._stream = stream

    async def run(self) -> None:
        # Whole lines only (a print is two writes): see LineSplitter.
        lines = LineSplitter()
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while chunk := await self.pipe.receive_some():
                    self._write(lines.feed(chunk))
        finally:
            self._write(lines.end())
            self.done.set()

    def _write(self, text: str) -> None:
        if text:
            stream = self._stream()
            stream.write(text)
            stream.flush()


async def run_isolated(
    spec: AttemptSpec,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None],
    *,
    forks: ForkServers | None = None,
) -> tuple[Any, OutletEventAccessors]:
    """Run the attempt ``spec`` names in a child process; return its result and events.

    Args:
        spec: The attempt (its task's Dag's ``fileloc`` is where the child loads it from).
        client: The client bound to the task instance; the child's requests go through
            it. It is ended with the attempt.
        on_rendered: Called with the rendered template fields when the child reports them.
        forks: The runtime's fork servers: the child is forked from a template where
            the platform allows (else, or when ``None``, a fresh interpreter starts).

    Returns:
        The value the task returned, and its outlet events (recorded by the caller).

    Raises:
        TaskLoadError: the Dag has no file, or the child cannot load the task from it.
        TaskProcessError: the task raised in the child, or the child died or broke the
            protocol; ``returncode`` and ``remote_traceback`` say how.
        TaskTimeoutError: the attempt ran past ``task.execution_timeout``; the child was
            killed.
        TypeError: the run's params are not JSON (``ValueError`` for a NaN).
    """
    task, try_number, label = spec.task, spec.try_number, spec.label
    dag = task.dag
    where = f"the task process for {label} try {try_number}"
    if os.name != "posix":
        msg = f"isolation='process' needs a POSIX system; {label} cannot run isolated here"
        raise TaskProcessError(msg, task=label, try_number=try_number)
    if dag.fileloc is None:
        msg = (
            f"cannot run {label} isolated: Dag {dag.dag_id!r} was not defined in a file "
            "(dag.fileloc is None), and a task process loads its task from the Dag's file; "
            "define the Dag at module level in a .py file, or set dag.fileloc"
        )
        raise TaskLoadError(msg)
    try:
        check_json(dict(spec.params), "params")
    except (TypeError, ValueError) as exc:
        msg = f"the params of run {spec.run_id!r} must be JSON to reach {where}: {exc}"
        raise type(exc)(msg) from None
    head = pack_frame(_start_frame(spec, dag.fileloc))
    parent_end, child_end = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_end))
    # The start frame waits in the socket: the task process need not wait for us.
    try:
        sent = parent_end.send(head)
    except BlockingIOError:
        sent = 0
    # The task process writes its stdout and stderr to pipes read here (see _Echo).
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    echoes = [
        _Echo(trio.lowlevel.FdStream(out_read), _stdout),
        _Echo(trio.lowlevel.FdStream(err_read), _stderr),
    ]
    try:
        process: TaskProcess | None = None
        if forks is not None and fork_server_available():
            try:
                process = await forks.fork(dag.fileloc, child_end, (out_write, err_write))
            except OSError as exc:
                msg = f"{where} could not be started: {exc}"
                raise TaskProcessError(msg, task=label, try_number=try_number) from exc
        if process is None:
            fd = child_end.fileno()
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", CHILD_MODULE, "--fd", str(fd)],
                pass_fds=(fd,),
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
            )
    except BaseException:
        child_end.close()
        await stream.aclose()
        with trio.CancelScope(shield=True):
            for echo in echoes:
                await echo.pipe.aclose()
        raise
    finally:
        # Only the task process writes to them now: they end when it (and what it
        # started) has exited.
        os.close(out_write)
        os.close(err_write)
    child_end.close()
    try:
        async with trio.open_nursery() as nursery:
            for echo in echoes:
                nursery.start_soon(echo.run)
            try:
                return await _attend(
                    spec, process, stream, head[sent:], client, on_rendered, parent_end
                )
            finally:
                # The child is reaped: what it wrote waits in the pipes, which end
                # unless a process it started holds them open.
                with trio.CancelScope(shield=True), trio.move_on_after(EXIT_DRAIN_SECONDS):
                    for echo in echoes:
                        await echo.done.wait()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_sole(group)
    finally:
        with trio.CancelScope(shield=True):
            for echo in echoes:
                await echo.pipe.aclose()


async def _attend(
    spec: AttemptSpec,
    process: TaskProcess,
    stream: trio.SocketStream,
    unsent: bytes,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None],
    parent_end: socket.socket,
) -> tuple[Any, OutletEventAccessors]:
    """Send the rest of the start frame (``unsent``), serve the child ``process``, and
    turn its end into the attempt's outcome."""
    task, try_number, label = spec.task, spec.try_number, spec.label
    dag = task.dag
    assert dag.fileloc is not None
    where = f"the task process for {label} try {try_number}"
    timeout = task.execution_timeout
    final: FinalFrame | None = None
    hung = False
    # execution_timeout counts from the start of execute, as in process: the child
    # reports its rendered fields just before, and that arms the limit.
    limit = trio.CancelScope()

    def executing(fields: dict[str, Any]) -> None:
        on_rendered(fields)
        if timeout is not None:
            limit.deadline = trio.current_time() + timeout

    try:
        with limit:
            try:
                await stream.send_all(unsent)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it died at once: its exit says how
            else:
                final = await _serve_until_exit(process, stream, client, executing, parent_end)
            # Reported, or gone: it has the grace period to exit.
            with trio.move_on_after(KILL_GRACE_SECONDS) as grace:
                await _exited(process)
            hung = final is None and grace.cancelled_caught
        if limit.cancelled_caught and final is None:
            assert timeout is not None
            await _stop(process, grace=KILL_GRACE_SECONDS)
            returncode = process.returncode
            if returncode == -signal.SIGTERM:
                how = "was stopped with SIGTERM"
            elif returncode == -signal.SIGKILL:
                how = f"ignored SIGTERM for {KILL_GRACE_SECONDS:g} s and was killed with SIGKILL"
            else:
                how = describe_exit(returncode if returncode is not None else 0)
            msg = (
                f"{label} try {try_number} ran past its execution_timeout of {timeout:g} s; "
                f"its task process {how}"
            )
            raise TaskTimeoutError(msg, task=label, timeout=timeout)
    except ProtocolError as exc:
        await _stop(process, grace=0)
        msg = f"{where} broke the frame protocol and was killed: {exc}"
        raise TaskProcessError(
            msg, task=label, try_number=try_number, returncode=process.returncode
        ) from exc
    finally:
        # Cancelled (the run is stopping) or done: no child outlives its attempt, and
        # nothing it sent late is served. Once it reported, how it ended is not needed.
        client.end()
        await _stop(process, grace=0, reaped=final is None)
        with trio.CancelScope(shield=True):
            await stream.aclose()
    if hung:
        msg = (
            f"{where} closed its connection without reporting a result and was killed "
            f"after {KILL_GRACE_SECONDS:g} s"
        )
        raise TaskProcessError(
            msg, task=label, try_number=try_number, returncode=process.returncode
        )
    return _outcome(task, final, where, label, try_number, process.returncode)


def _start_frame(spec: AttemptSpec, dag_file: str) -> StartFrame:
    task = spec.task
    task_retention, asset_retention = spec.task_retention, spec.asset_retention
    return StartFrame(
        dag_file=dag_file, dag_id=task.dag.dag_id, run_id=spec.run_id, task_id=task.task_id,
        map_index=spec.map_index, try_number=spec.try_number, max_tries=spec.max_tries,
        params=dict(spec.params), assets=spec.assets,
        task_retention=None if task_retention is None else task_retention.total_seconds(),
        asset_retention=None if asset_retention is None else asset_retention.total_seconds(),
        # The child computes expiry times on the supervisor's clock.
        clock_offset=spec.wall_clock() - time.time(),
    )  # fmt: skip


def _outcome(
    task: Operator,
    final: FinalFrame | None,
    where: str,
    label: str,
    try_number: int,
    returncode: int | None,
) -> tuple[Any, OutletEventAccessors]:
    """The attempt's result from the child's final frame, or the error of its death."""
    if final is None:
        assert returncode is not None  # reaped by run_isolated
        how = describe_exit(returncode)
        msg = f"{where} {how}" + (
            " before reporting a result" if returncode >= 0 else "; it reported no result"
        )
        raise TaskProcessError(msg, task=label, try_number=try_number, returncode=returncode)
    match final:
        case LoadErrorFrame(message=message):
            raise TaskLoadError(message, path=task.dag.fileloc)
        case ErrorFrame(type=remote_type, message=detail, traceback=text):
            msg = f"{label} try {try_number} raised {remote_type} in its task process" + (
                f": {detail}" if detail else ""
            )
            raise TaskProcessError(
                msg, task=label, try_number=try_number, remote_type=remote_type,
                remote_traceback=text,
            ) from RemoteTraceback(text)  # fmt: skip
        case ResultFrame(value=value, events=events):
            try:
                return value, outlet_events(task, events)
            except (KeyError, TypeError) as exc:
                msg = f"{where} reported asset events that are not the task's outlets: {exc}"
                raise TaskProcessError(msg, task=label, try_number=try_number) from exc


def outlet_events(task: Operator, events: Sequence[m.AddAssetEvent]) -> OutletEventAccessors:
    """Rebuild a task's ``outlet_events`` from the events its process reported.

    Raises:
        UndeclaredAssetError: an event is for an asset or alias that is not an outlet.
        TypeError: an alias event names an Asset outlet, or the other way round.
    """
    accessors = OutletEventAccessors(
        tuple(o for o in task.outlets if isinstance(o, Asset | AssetAlias))
    )
    for event in events:
        asset = Asset(event.name, event.uri)
        if event.alias_name is None:
            accessors[asset].extra = dict(event.extra)
        else:
            accessors[AssetAlias(event.alias_name)].add(asset, dict(event.extra))
    return accessors
