"""Warming a template before it forks: one attempt of a built-in task, run in it.

A task process forked from a template (:mod:`.template`) shares the template's memory
until it writes to it, and everything it does for the first time in its life it does
alone: cattrs generating and compiling a hook for a frame it has not sent before, trio
filling its caches, CPython specialising the bytecode of every function it runs, the
type attribute cache. Each of those writes copies pages (a page fault, measured at
several microseconds each on a loaded machine) or runs a compiler, in every task
process. :func:`rehearse` does it once, in the template: it runs the task process's
own code (:func:`stateward._runtime.child.serve`) on a socket pair, against a stand-in
parent that answers its requests, for an ``async def`` task that sets and gets a key,
renders a template field and returns a value. What is left behind is only warm caches:
the rehearsal's Dag is not the file's, its run is not recorded anywhere, and it starts
no thread (a plain-function task would: trio keeps its worker threads for a while, and
a template must hold no thread when it forks).
"""

from __future__ import annotations

import socket
from typing import Any, Final

import trio

from .._dag import Dag
from .._protocol import messages as m
from .._protocol.converter import decode_frame
from .._protocol.frames import (
    RenderedFrame,
    RequestFrame,
    ResponseFrame,
    ResultFrame,
    StartFrame,
)
from .._protocol.wire import FrameReader, pack_frame
from . import child

#: Seconds the rehearsal may take before it is abandoned (the template forks cold).
REHEARSAL_SECONDS: Final = 10.0


def _rehearsal_dag() -> Dag:
    dag = Dag("stateward_template_rehearsal")

    @dag.task(op_kwargs={"greeting": "<< task_state.get('key', 'hello') >> << run_id >>"})
    async def rehearsal(task_state: Any, greeting: str) -> dict[str, Any]:
        await task_state.aset("key", [1, 2.5, "three", True, {"four": 4}])
        return {"greeting": greeting, "value": await task_state.aget("key"), "none": None}

    return dag


def rehearse() -> bool:
    """Run one attempt of a built-in task through the task process's code, here.

    Returns:
        Whether it ran to its result (if not, the template only forks colder).
    """
    dag = _rehearsal_dag()
    start = StartFrame(
        dag_file="<rehearsal>", dag_id=dag.dag_id, run_id="rehearsal", task_id="rehearsal",
        map_index=-1, try_number=1, max_tries=1, params={"p": 1}, assets=(),
        task_retention=None, asset_retention=None, clock_offset=0.0,
    )  # fmt: skip
    ours, theirs = socket.socketpair()
    with ours, theirs:
        try:
            return trio.run(_rehearse, ours, theirs, start, {dag.dag_id: dag})
        except Exception:  # a warm-up only: never a reason for the template to fail
            return False


async def _rehearse(
    ours: socket.socket, theirs: socket.socket, start: StartFrame, dags: dict[str, Dag]
) -> bool:
    parent = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    done = False
    with trio.move_on_after(REHEARSAL_SECONDS):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.serve, theirs, dags)
            await parent.send_all(pack_frame(start))
            done = await _stand_in(parent)
    return done


async def _stand_in(parent: trio.SocketStream) -> bool:
    """Answer the rehearsal's requests as the runtime would; True once it reported."""
    reader = FrameReader(parent)
    stored: dict[str, Any] = {}
    while (raw := await reader.receive()) is not None:
        match decode_frame(raw):
            case RequestFrame(id=request_id, msg=m.SetTaskState(key=key, value=value)):
                stored[key] = value
                response: m.Response = m.OkResponse()
            case RequestFrame(id=request_id, msg=m.GetTaskState(key=key)):
                response = m.TaskStateResult(key, stored.get(key))
            case RequestFrame(id=request_id, msg=m.ListTaskState()):
                response = m.StateItemsResult(dict(stored))
            case RequestFrame(id=request_id, msg=request):
                response = m.ErrorResponse(m.ErrorType.PROTOCOL, f"not rehearsed: {request!r}")
            case RenderedFrame():
                continue
            case ResultFrame():
                return True
            case _:
                return False
        await parent.send_all(pack_frame(ResponseFrame(request_id, response)))
    return False
