"""Where a task attempt's code runs: in the runtime's process, or in a child process.

In process (``isolation="none"``, the default), ``execute`` runs in trio's thread
(``async def``) or in a worker thread (plain functions); :func:`execute_in_process`
applies the task's ``execution_timeout``. An async task is cancelled. A plain function
cannot be interrupted: it stops at its next state call (which raises ``trio.Cancelled``
in its thread) or, if it makes none, fails when it returns.

With ``isolation="process"``, :func:`run_isolated` runs the attempt in a child process,
``python -m stateward.runtime.child``, connected by a socket pair. The child loads the
task from its Dag file (:attr:`~stateward.Dag.fileloc`), so nothing is pickled. This
module is the parent side: it starts the child, relays the child's requests to the
supervisor through the :class:`~stateward.runtime.client.SupervisorClient` bound to the
task instance (the child never says who it is: a frame cannot change its identity),
and turns how the child ended into the attempt's outcome. A child that dies, however it
dies, fails only its own attempt; ``execution_timeout`` kills it.

The frames on the socket are described in :mod:`stateward.runtime.frames`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import attrs
import trio

from ..assets import Asset, AssetAlias
from ..context.context import OutletEventAccessors
from ..dag import Operator
from ..errors import (
    ProtocolError,
    StatewardError,
    TaskLoadError,
    TaskProcessError,
    TaskTimeoutError,
    raise_sole,
)
from ..records import AssetInfo, instance_label
from . import messages as m
from .client import SupervisorClient
from .frames import (
    FrameReader,
    FrameWriter,
    StartFrame,
    check_json,
    pack_frame,
)
from .supervisor import error_response

#: The most requests of one child served at once; more wait to be read.
MAX_IN_FLIGHT: Final = 64
#: Seconds a child has to exit after SIGTERM (on a timeout) or after reporting its
#: outcome, before it is killed with SIGKILL.
KILL_GRACE_SECONDS: Final = 5.0
#: The module the child runs (``python -m``).
CHILD_MODULE: Final = "stateward.runtime.child"

_FINAL_KINDS: Final = frozenset({"result", "error", "load_error"})
_SIGNAL_HINTS: Final = {
    "SIGKILL": " (sent by another process, or by the kernel's out-of-memory killer)",
    "SIGSEGV": " (a segmentation fault: a crash in native code)",
    "SIGBUS": " (a bus error: a crash in native code)",
    "SIGABRT": " (aborted: a fatal error in native code or in the interpreter)",
}


# -- in process ------------------------------------------------------------------------------


async def execute_in_process(
    instance: Operator, context: Mapping[str, Any], *, label: str, try_number: int
) -> Any:
    """Run ``instance.execute(context)`` in this process, within its execution_timeout.

    ``async def`` code runs in trio's thread and is cancelled at the limit; a plain
    function runs in a worker thread, which cannot be interrupted: it stops at its next
    state call, or fails when it returns.

    Raises:
        TaskTimeoutError: the attempt ran past ``instance.execution_timeout``.
    """
    timeout = instance.execution_timeout
    with trio.move_on_after(math.inf if timeout is None else timeout) as limit:
        if instance.is_async:
            result = await instance.execute(context)
        else:
            result = await trio.to_thread.run_sync(instance.execute, context)
    if not limit.cancel_called:
        return result
    assert timeout is not None
    what = f"{label} try {try_number} ran past its execution_timeout of {timeout:g} s"
    if instance.is_async:
        msg = f"{what} and was cancelled"
    elif limit.cancelled_caught:
        msg = (
            f"{what}; it was stopped at its next state call (a plain-function task cannot "
            "be interrupted; isolation='process' stops it at once)"
        )
    else:
        msg = (
            f"{what}; it ran on until it returned, as a plain-function task cannot be "
            "interrupted: use isolation='process' to stop it at the limit"
        )
    raise TaskTimeoutError(msg, task=label, timeout=timeout)


# -- the parent side -------------------------------------------------------------------------


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a task process, shown as the cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


async def _relay(client: SupervisorClient, frame: Mapping[str, Any]) -> Any:
    """Serve one request frame; return the response (an error is an ErrorResponse)."""
    extra = sorted(set(frame) - {"kind", "id", "msg"})
    if extra:
        detail = (
            f"a request frame holds only 'kind', 'id' and 'msg', not {extra}: a task "
            "process cannot say who it is, the supervisor knows"
        )
        return m.ErrorResponse(m.ErrorType.PROTOCOL, detail)
    try:
        request = m.decode(frame.get("msg"))
    except ProtocolError as exc:
        return error_response(exc)
    if isinstance(request, m.AddAssetEvent):
        detail = (
            "a task process emits asset events through outlet_events; they are recorded "
            "from its result when it succeeds, not sent as requests"
        )
        return m.ErrorResponse(m.ErrorType.SCOPE_DENIED, detail)
    try:
        return await client.request(request)
    except StatewardError as exc:
        if type(exc) is StatewardError:  # an INTERNAL answer: keep its text as it was
            return m.ErrorResponse(m.ErrorType.INTERNAL, str(exc))
        return error_response(exc)


def _check_final(frame: Mapping[str, Any]) -> None:
    kind = frame["kind"]
    expected = {
        "result": {"kind", "value", "events"},
        "error": {"kind", "type", "message", "traceback"},
        "load_error": {"kind", "message"},
    }[kind]
    if set(frame) != expected:
        msg = f"a {kind} frame holds {sorted(expected)}, got {sorted(frame)}"
        raise ProtocolError(msg)
    texts = [k for k in expected - {"kind", "value", "events"} if not isinstance(frame[k], str)]
    if texts or (kind == "result" and not isinstance(frame["events"], list)):
        msg = f"a malformed {kind} frame: {frame!r:.200}"
        raise ProtocolError(msg)


async def serve_child(
    stream: trio.abc.Stream,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None] = lambda fields: None,
    *,
    sock: socket.socket | None = None,
) -> dict[str, Any] | None:
    """Relay a task process's requests to the supervisor until it reports its outcome.

    Args:
        stream: The parent's end of the connection (the start frame already sent).
        client: The client bound to the task instance: every request is served as it.
        on_rendered: Called with the rendered template fields when they arrive.
        sock: The stream's socket, to write responses without a task switch.

    Returns:
        The final frame (``result``, ``error`` or ``load_error``; checked), or ``None``
        if the stream ended first.

    Raises:
        ProtocolError: the stream is corrupt (the caller kills the child).
    """
    reader = FrameReader(stream)
    writer = FrameWriter(stream, sock)
    limiter = trio.CapacityLimiter(MAX_IN_FLIGHT)
    rendered_seen = False

    async def answer(request_id: int, frame: dict[str, Any], token: object) -> None:
        try:
            response = await _relay(client, frame)
            reply = {"kind": "response", "id": request_id, "msg": m.encode(response)}
            try:
                data = pack_frame(reply)
            except ProtocolError as exc:  # e.g. a listing over the frame limit
                refusal = m.ErrorResponse(m.ErrorType.PROTOCOL, f"the response is refused: {exc}")
                data = pack_frame({**reply, "msg": m.encode(refusal)})
            # Holding this request's slot while the child reads too little stops reading
            # its requests, instead of queueing responses without limit.
            await writer.room(len(data))
            writer.post(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the child is gone; how it ended is reported by its exit
        finally:
            limiter.release_on_behalf_of(token)

    async def write() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await writer.run()  # the child is gone; how it ended is reported by its exit

    async def read(nursery: trio.Nursery) -> dict[str, Any] | None:
        nonlocal rendered_seen
        while True:
            frame = await reader.receive()
            if frame is None:
                return None
            kind = frame.get("kind")
            if kind == "request":
                request_id = frame.get("id")
                if type(request_id) is not int:
                    msg = f"a request frame needs an int 'id', got {request_id!r}"
                    raise ProtocolError(msg)
                token = object()
                await limiter.acquire_on_behalf_of(token)
                nursery.start_soon(answer, request_id, frame, token)
            elif kind == "rendered":
                fields = frame.get("fields")
                if set(frame) != {"kind", "fields"} or not isinstance(fields, dict):
                    msg = f"a malformed rendered frame: {frame!r:.200}"
                    raise ProtocolError(msg)
                if rendered_seen:
                    # It starts execute's clock: a second one would push the timeout back.
                    msg = "a second rendered frame (one attempt renders once)"
                    raise ProtocolError(msg)
                rendered_seen = True
                on_rendered(fields)
            elif kind in _FINAL_KINDS:
                _check_final(frame)
                return frame
            else:
                msg = f"a frame of unknown kind {kind!r}: {frame!r:.200}"
                raise ProtocolError(msg)

    final: dict[str, Any] | None = None
    corrupt: ProtocolError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        try:
            final = await read(nursery)
        except ProtocolError as exc:
            corrupt = exc  # raised below, not wrapped in the nursery's exception group
        # The child reported, is gone, or is to be killed: nobody waits for the rest.
        nursery.cancel_scope.cancel()
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


def _child_env() -> dict[str, str]:
    # The child imports what the parent can: the same stateward, the same sys.path.
    env = dict(os.environ)
    entries = [entry for entry in sys.path if entry]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    return env


def _signal_group(process: trio.Process, sig: signal.Signals) -> None:
    # The child leads its own process group: stop what it started along with it, also
    # after the child itself has exited (the group's id is not reused while any process
    # the child started is still in it).
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        if process.returncode is None:
            process.send_signal(sig)


async def _stop(process: trio.Process, *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds; reap it."""
    with trio.CancelScope(shield=True):
        if grace > 0:
            _signal_group(process, signal.SIGTERM)
            with trio.move_on_after(grace):
                await process.wait()
        _signal_group(process, signal.SIGKILL)
        await process.wait()


#: Seconds to read what an exited child had already written, when a process it started
#: still holds the socket open (so no end of stream comes).
EXIT_DRAIN_SECONDS: Final = 1.0


async def _serve_until_exit(
    process: trio.Process,
    stream: trio.SocketStream,
    client: SupervisorClient,
    on_rendered: Callable[[dict[str, Any]], None],
    sock: socket.socket,
) -> dict[str, Any] | None:
    """Serve the child until its final frame, its end of stream, or its exit (then a
    short drain): a process the child started may hold the socket open after it died."""
    final: dict[str, Any] | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def watch_exit() -> None:
                await process.wait()
                await trio.sleep(EXIT_DRAIN_SECONDS)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_exit)
            final = await serve_child(stream, client, on_rendered, sock=sock)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_sole(group)  # serve_child's own error (a broken protocol)
    return final


async def run_isolated(
    task: Operator,
    client: SupervisorClient,
    rendered: dict[str, Any],
    *,
    run_id: str,
    params: Mapping[str, Any],
    map_index: int,
    try_number: int,
    max_tries: int,
    assets: Sequence[AssetInfo],
    task_retention: timedelta | None,
    asset_retention: timedelta | None,
    wall_clock: Callable[[], float],
) -> tuple[Any, OutletEventAccessors]:
    """Run one attempt of ``task`` in a child process; return its result and events.

    Args:
        task: The task (its Dag's ``fileloc`` is where the child loads it from).
        client: The client bound to the task instance; the child's requests go through it.
        rendered: Filled with the rendered template fields when the child reports them.
        run_id: The run.
        params: The run's params (sent as JSON).
        map_index: The instance (-1 unmapped).
        try_number: The try.
        max_tries: ``retries + 1``.
        assets: The concrete assets the task declared.
        task_retention: The runtime's default task-state retention.
        asset_retention: The runtime's default asset-state retention.
        wall_clock: The runtime's wall clock (the child computes expiry on it).

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
    dag = task.dag
    label = instance_label(dag.dag_id, task.task_id, map_index)
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
        check_json(dict(params), "params")
    except (TypeError, ValueError) as exc:
        msg = f"the params of run {run_id!r} must be JSON to reach {where}: {exc}"
        raise type(exc)(msg) from None
    start = StartFrame(
        dag.fileloc, dag.dag_id, task.task_id, run_id, map_index, try_number, max_tries,
        dict(params), tuple(assets),
        None if task_retention is None else task_retention.total_seconds(),
        None if asset_retention is None else asset_retention.total_seconds(),
        0.0,
    )  # fmt: skip
    parent_end, child_end = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_end))
    try:
        fd = child_end.fileno()
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", CHILD_MODULE, "--fd", str(fd)],
            pass_fds=(fd,),
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        child_end.close()
        await stream.aclose()
        raise
    child_end.close()
    timeout = task.execution_timeout
    final: dict[str, Any] | None = None
    hung = False
    # execution_timeout counts from the start of execute, as in process: the child
    # reports its rendered fields just before, and that arms the limit.
    limit = trio.CancelScope()

    def executing(fields: dict[str, Any]) -> None:
        rendered.update(fields)
        if timeout is not None:
            limit.deadline = trio.current_time() + timeout

    try:
        with limit:
            offset = wall_clock() - time.time()
            try:
                await stream.send_all(
                    pack_frame(attrs.evolve(start, clock_offset=offset).to_frame())
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it died at once: its exit says how
            else:
                final = await _serve_until_exit(process, stream, client, executing, parent_end)
            # Reported, or gone: it has the grace period to exit.
            with trio.move_on_after(KILL_GRACE_SECONDS):
                await process.wait()
            hung = final is None and process.returncode is None
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
        # Cancelled (the run is stopping) or done: no child outlives its attempt.
        await _stop(process, grace=0)
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


def _outcome(
    task: Operator,
    final: dict[str, Any] | None,
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
    if final["kind"] == "load_error":
        raise TaskLoadError(final["message"], path=task.dag.fileloc)
    if final["kind"] == "error":
        remote_type, text = final["type"], final["traceback"]
        detail = final["message"]
        msg = f"{label} try {try_number} raised {remote_type} in its task process" + (
            f": {detail}" if detail else ""
        )
        raise TaskProcessError(
            msg, task=label, try_number=try_number, remote_type=remote_type, remote_traceback=text
        ) from RemoteTraceback(text)
    try:
        events = outlet_events(task, final["events"])
    except (ProtocolError, KeyError, TypeError) as exc:
        msg = f"{where} reported asset events that are not the task's outlets: {exc}"
        raise TaskProcessError(msg, task=label, try_number=try_number) from exc
    return final["value"], events


def outlet_events(task: Operator, encoded: list[Any]) -> OutletEventAccessors:
    """Rebuild a task's ``outlet_events`` from the events its process reported.

    Raises:
        ProtocolError: an item is not an encoded ``AddAssetEvent``.
        UndeclaredAssetError: an event is for an asset or alias that is not an outlet.
        TypeError: an alias event names an Asset outlet, or the other way round.
    """
    accessors = OutletEventAccessors(
        tuple(o for o in task.outlets if isinstance(o, Asset | AssetAlias))
    )
    for item in encoded:
        event = m.decode(item)
        if not isinstance(event, m.AddAssetEvent):
            msg = f"an outlet event must be an AddAssetEvent, got {type(event).__name__}"
            raise ProtocolError(msg)
        asset = Asset(event.name, event.uri)
        if event.alias_name is None:
            accessors[asset].extra = dict(event.extra)
        else:
            accessors[AssetAlias(event.alias_name)].add(asset, dict(event.extra))
    return accessors
