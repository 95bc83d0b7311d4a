"""Process-isolated tasks: deaths, timeouts, scope, templates, retries, and the wire.

Task processes take ~0.2 s to start, so the Dags of tests/isolation_fixtures/dags.py
whose instances are independent run once per module (their instances concurrently),
and the tests read their results.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from stateward import (
    Asset,
    Dag,
    DagDefinitionError,
    DagRunResult,
    MemoryStore,
    TaskLoadError,
    TaskProcessError,
    TaskTimeoutError,
    open_runtime,
)
from stateward._errors import ProtocolError, UndeclaredAssetError
from stateward._loader import load_dags
from stateward._protocol import messages as m
from stateward._protocol.converter import decode, decode_frame, encode, encode_frame
from stateward._protocol.frames import ResultFrame, StartFrame
from stateward._protocol.wire import MAX_FRAME_BYTES, FrameReader, FrameWriter, pack_frame
from stateward._records import AssetInfo
from stateward._runtime import isolation
from stateward._runtime.isolation import RemoteTraceback, outlet_events, serve_child
from stateward._runtime.supervisor import Caller
from stateward.store.base import TaskScope, Writer

from ._processes import wait_for_exit

FIXTURES = Path(__file__).parents[1] / "isolation_fixtures" / "dags.py"


def load(dag_id: str) -> Dag:
    """A Dag of the fixture file, loaded by path as the CLI and the child load it."""
    return load_dags(FIXTURES)[dag_id]


@attrs.frozen
class Ran:
    """A module-level run and what was read from the runtime after it."""

    result: DagRunResult
    store: MemoryStore
    state: dict[str, Any]


def run_fixture_dag(dag_id: str, seed: dict[tuple[str, str], Any]) -> Ran:
    """Run a fixture Dag in a runtime of its own; read a few keys after it."""
    store = MemoryStore()

    async def main() -> Ran:
        async with open_runtime(store=store) as rt:
            for (task_id, key), value in seed.items():
                await rt.state.task(dag_id, "r", task_id).aset(key, value)
            result = await rt.run_dag(load(dag_id), run_id="r")
            state = {
                "alive": await rt.state.task(dag_id, "r", "sibling_isolated").aget("alive"),
                "job_id": await rt.state.task(dag_id, "r", "resumable_job").aget("job_id"),
            }
            # The supervisor still serves after its children died.
            await rt.state.task(dag_id, "r", "after").aset("written", True)
            state["after"] = await rt.state.task(dag_id, "r", "after").aget("written")
            return Ran(result, store, state)

    return trio.run(main)


@pytest.fixture(scope="module")
def deaths() -> Ran:
    """The "deaths" Dag: each task process dies its own way, next to healthy siblings."""
    return run_fixture_dag("deaths", {})


@pytest.fixture(scope="module")
def features() -> Ran:
    """The "features" Dag: accessors, templates, mapping, events and retries, isolated."""
    return run_fixture_dag("features", {("templated", "job_id"): "j-7"})


# -- deaths -------------------------------------------------------------------------------------


def test_exception_in_child_is_reported_with_its_traceback(deaths: Ran) -> None:
    """A task that raises fails with TaskProcessError carrying the child's type and traceback."""
    ti = deaths.result.ti("raises")
    error = ti.error
    assert ti.state == "failed"
    assert isinstance(error, TaskProcessError)
    assert (
        str(error) == "deaths.raises try 1 raised ValueError in its task process: boom in the child"
    )
    assert (error.remote_type, error.returncode, error.try_number) == ("ValueError", None, 1)
    # The traceback starts in the task's own code, and is printed as the cause.
    assert error.remote_traceback.startswith("Traceback (most recent call last):\n  File ")
    assert 'dags.py", line' in error.remote_traceback.splitlines()[1]
    assert error.remote_traceback.rstrip().endswith("ValueError: boom in the child")
    assert isinstance(error.__cause__, RemoteTraceback)
    assert 'raise ValueError("boom in the child")' in str(error.__cause__)


@pytest.mark.parametrize(
    ("task_id", "returncode", "message"),
    [
        ("exits", 3, "the task process for deaths.exits try 1 exited with code 3 before reporting a result"),
        ("sigkill", -9, "the task process for deaths.sigkill try 1 was killed by SIGKILL (sent by another process, or by the kernel's out-of-memory killer); it reported no result"),
        ("segfault", -11, "the task process for deaths.segfault try 1 was killed by SIGSEGV (a segmentation fault: a crash in native code); it reported no result"),
        ("dies_mid_request", -9, "the task process for deaths.dies_mid_request try 1 was killed by SIGKILL"),
    ],
)  # fmt: skip
def test_a_dead_child_fails_its_attempt_with_how_it_died(
    deaths: Ran, task_id: str, returncode: int, message: str
) -> None:
    """os._exit, SIGKILL, a segfault, death with requests in flight: a failed attempt saying how."""
    ti = deaths.result.ti(task_id)
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert isinstance(ti.error, TaskProcessError)
    assert ti.error.returncode == returncode
    assert ti.error.remote_type is None
    assert str(ti.error).startswith(message)


def test_out_of_memory_fails_the_try_and_the_retry_succeeds(deaths: Ran) -> None:
    """A child over its memory limit fails its try; the retry policy runs a fresh process."""
    ti = deaths.result.ti("out_of_memory")
    assert (ti.state, ti.try_number, ti.result) == ("success", 2, "recovered on try 2")
    first = ti.attempts[0].error
    assert isinstance(first, TaskProcessError)
    assert first.remote_type == "MemoryError"


def test_a_result_that_is_not_json_fails_naming_its_type(deaths: Ran) -> None:
    """Results cross as JSON: a set is refused with where it sits and what to do."""
    error = deaths.result.ti("returns_a_set").error
    assert isinstance(error, TaskProcessError)
    assert error.remote_type == "TypeError"
    assert "the result of deaths.returns_a_set['ids'] is a set ({1, 2}), which is not JSON" in str(
        error
    )
    assert "return a JSON value, or keep the object in task state or a file" in str(error)


def test_siblings_and_the_supervisor_are_unaffected(deaths: Ran) -> None:
    """Next to dying processes, isolated and in-process siblings succeed; state still works."""
    isolated = deaths.result.ti("sibling_isolated")
    in_process = deaths.result.ti("sibling_in_process")
    assert (isolated.state, in_process.state) == ("success", "success")
    assert isolated.result != os.getpid()
    assert in_process.result == os.getpid()
    assert deaths.state["alive"] is True
    assert deaths.state["after"] is True


# -- what works the same ------------------------------------------------------------------------


def test_sync_accessors_work_unchanged_in_a_task_process(features: Ran) -> None:
    """get/set/items/in/attributes/increment/compare_and_set/delete, and asset state."""
    result = features.result.ti("sync_accessors").result
    assert result == {
        "get": 1, "item": [1, {"a": True}], "attr": 1, "in": [True, False], "increment": 6,
        "cas": [True, False], "missing": "default", "items": [["n", 7]],
        "tuple_refused": "cannot store key 'bad': value is a tuple ((1, 2)), which is not a "
        "JSON value; use a list",
        "asset": ["2024-01-02", ["orders"]], "ids": ["r", -1],
        "deep_refused": [
            "cannot store the value for key 'deep': it nests lists and dicts 101 levels deep, over "
            "the limit of 100; flatten it (e.g. a list of records) or store its json.dumps() "
            "text as a str", "deep",
        ],
        "unstorable_in": [False, False], "enum_key": ["j", "j", True],
    }  # fmt: skip


def test_async_accessors_and_many_requests_in_flight(features: Ran) -> None:
    """Async twins work; a sync call from async code is refused; pipelined replies correlate."""
    result = features.result.ti("async_accessors").result
    assert result["aget"] == "v"
    assert (result["aincrement"], result["acas"], result["asset"]) == (2, True, 42)
    assert result["params"] == {"name": "ada"}
    assert "use await task_state.aget(...) instead" in result["sync_from_async"]
    assert features.result.ti("pipelined").result == list(range(100))


def test_templates_are_rendered_in_the_child_and_recorded(features: Ran) -> None:
    """Template fields read params, task state and ti; .rendered holds what execute saw."""
    ti = features.result.ti("templated")
    assert ti.rendered == {"greeting": "hello ada, job j-7 try 1"}
    assert ti.result["greeting"] == "hello ada, job j-7 try 1"
    assert ti.result["pid"] != os.getpid()


def test_mapped_instances_each_run_in_a_process(features: Ran) -> None:
    """Each map index gets its own element."""
    assert [features.result.ti("mapped", i).result for i in range(3)] == [
        [10, 0],
        [20, 1],
        [30, 2],
    ]


def test_outlet_events_of_a_task_process_are_recorded(features: Ran) -> None:
    """Events reach the supervisor on success; an alias consumer then reaches the asset."""
    events = [
        (e.asset.name, e.extra, e.alias_name, e.writer.label if e.writer else None)
        for e in features.store.events
    ]
    assert ("orders", '{"rows":3}', "daily", "features/r/produce try 1") in events
    assert ("sales", '{"source":"crm"}', None, "features/r/produce try 1") in events
    assert features.result.ti("consume").result == [["orders"], "2024-01-02"]


def test_a_killed_job_resumes_from_task_state_on_retry(features: Ran) -> None:
    """The canonical resumable job: try 1 stores its job id and is SIGKILLed; try 2 reattaches."""
    ti = features.result.ti("resumable_job")
    assert (ti.state, ti.try_number) == ("success", 2)
    assert ti.result == "job-1 done on try 2, submitted 1x"
    first = ti.attempts[0].error
    assert isinstance(first, TaskProcessError)
    assert first.returncode == -signal.SIGKILL
    assert features.state["job_id"] == "job-1"


# -- execution_timeout --------------------------------------------------------------------------


async def test_in_process_async_task_is_cancelled_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An async task past execution_timeout is cancelled; the attempt fails (then retries)."""
    dag = Dag("timeouts")

    @dag.task(execution_timeout=timedelta(minutes=1), retries=1)
    async def slow() -> None:
        await trio.sleep(3600)

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(slow, run_id="r")
    assert (ti.state, ti.try_number) == ("failed", 2)
    assert isinstance(ti.error, TaskTimeoutError)
    assert isinstance(ti.error, TimeoutError)
    assert (ti.error.task, ti.error.timeout) == ("timeouts.slow", 60.0)
    assert str(ti.error) == (
        "timeouts.slow try 2 ran past its execution_timeout of 60 s and was cancelled"
    )


async def test_in_process_sync_task_stops_at_its_next_state_call() -> None:
    """A thread cannot be interrupted: past the limit, its next state call ends it."""
    dag = Dag("timeouts")
    calls: list[object] = []

    @dag.task(execution_timeout=0.2)
    def polls(task_state: Any) -> None:
        while True:
            calls.append(task_state.get("status"))
            time.sleep(0.01)

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(polls, run_id="r")
    assert isinstance(ti.error, TaskTimeoutError)
    assert "ran past its execution_timeout of 0.2 s; it was stopped at its next state call" in str(
        ti.error
    )
    made = len(calls)
    await trio.sleep(0.05)
    assert len(calls) == made  # the thread has ended


async def test_in_process_sync_task_without_state_calls_fails_when_it_returns() -> None:
    """A plain function that never calls state runs to its end, then fails as timed out."""
    dag = Dag("timeouts")

    @dag.task(execution_timeout=0.05)
    def naps() -> str:
        time.sleep(0.3)
        return "done"

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(naps, run_id="r")
    assert (ti.state, ti.result) == ("failed", None)
    assert isinstance(ti.error, TaskTimeoutError)
    assert "it ran on until it returned" in str(ti.error)
    assert "use isolation='process' to stop it at the limit" in str(ti.error)
    assert ti.duration >= 0.3


async def test_isolated_task_is_killed_at_its_timeout() -> None:
    """An isolated task past execution_timeout gets SIGTERM at once, whatever it is doing."""
    async with open_runtime(store=MemoryStore()) as rt:
        started = time.perf_counter()
        ti = await rt.run_task(load("limits").get_task("sleeps_sync"), run_id="r")
        elapsed = time.perf_counter() - started
        pid = await rt.state.task("limits", "r", "sleeps_sync").aget("pid")
    assert isinstance(ti.error, TaskTimeoutError)
    assert str(ti.error) == (
        "limits.sleeps_sync try 1 ran past its execution_timeout of 0.5 s; "
        "its task process was stopped with SIGTERM"
    )
    assert elapsed < 10  # not the 60 s it would sleep
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM first; SIGKILL when the process is still there after the grace period."""
    monkeypatch.setattr(isolation, "KILL_GRACE_SECONDS", 0.3)
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(load("limits").get_task("ignores_sigterm"), run_id="r")
    assert isinstance(ti.error, TaskTimeoutError)
    assert str(ti.error).endswith(
        "its task process ignored SIGTERM for 0.3 s and was killed with SIGKILL"
    )


async def test_cancelling_a_run_kills_its_task_processes() -> None:
    """Structured concurrency: no task process outlives a cancelled run."""
    task = load("limits").get_task("waits_forever")
    async with open_runtime(store=MemoryStore()) as rt, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: rt.run_task(task, run_id="r"))
        accessor = rt.state.task("limits", "r", "waits_forever")
        for _ in range(500):  # the process is up once it has written its pid
            if (pid := await accessor.aget("pid")) is not None:
                break
            await trio.sleep(0.02)
        else:
            pytest.fail("the task process did not start within 10 s")
        os.kill(pid, 0)  # running
        nursery.cancel_scope.cancel()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- scope and the wire -------------------------------------------------------------------------


async def test_raw_frames_from_a_task_process_are_judged_by_the_parent() -> None:
    """Claimed identities, undeclared assets, admin requests and events are refused."""
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(load("limits").get_task("rogue"), run_id="r")
        forged = await rt.state.task("deaths", "r", "raises").aget("k")
        sales = await rt.state.asset(name="sales").aitems()
    assert ti.state == "success", ti.error
    kinds = {name: answer[0] for name, answer in ti.result.items() if name != "legit"}
    assert kinds == {
        "claims_identity": "protocol",
        "extra_field": "protocol",
        "undeclared_asset": "undeclared_asset",
        "admin_list": "scope_denied",
        "admin_cleanup": "scope_denied",
        "admin_declare": "scope_denied",
        "asset_event": "scope_denied",
        "response_as_request": "protocol",
        "unknown_type": "protocol",
        "not_a_message": "protocol",
    }
    assert "not ['caller']: a task process cannot say who it is" in ti.result["claims_identity"][1]
    assert "extra fields found (dag_id)" in ti.result["extra_field"][1]
    assert "did not declare the asset with name='sales'" in ti.result["undeclared_asset"][1]
    assert ti.result["legit"] == {"type": "TaskStateResult", "key": "k", "value": None}
    assert (forged, sales) == (None, [])


async def test_a_corrupt_stream_kills_the_task_process() -> None:
    """Bytes that are not frames: the child is killed and the attempt fails saying why."""
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(load("limits").get_task("corrupts_stream"), run_id="r")
    assert isinstance(ti.error, TaskProcessError)
    assert str(ti.error).startswith(
        "the task process for limits.corrupts_stream try 1 broke the frame protocol and was "
        "killed: a frame is not UTF-8 JSON"
    )


@pytest.fixture
async def relay() -> Any:
    """serve_child over an in-memory stream, playing the child by hand (no process)."""
    async with open_runtime(store=MemoryStore()) as rt:
        scope = TaskScope("d", "r", "t", -1)
        client = rt.client(Caller(task=scope, writer=Writer("d", "r", "t", -1, 1)))
        parent, child = trio.testing.memory_stream_pair()
        yield rt, client, parent, child


async def exchange(child: Any, frames: list[Any]) -> list[dict[str, Any]]:
    for frame in frames:
        await child.send_all(frame if isinstance(frame, bytes) else pack_frame(frame))
    reader = FrameReader(child)
    return [await reader.receive() or {} for _ in frames]


async def test_relay_answers_bad_requests_and_serves_as_the_bound_identity(relay: Any) -> None:
    """Undecodable requests get PROTOCOL answers, correlated by id; writes land as the caller."""
    rt, client, parent, child = relay
    set_k = encode(m.SetTaskState("k", 1))
    rendered: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        finals: list[Any] = []

        async def serve() -> None:
            finals.append(await serve_child(parent, client, rendered.append))

        nursery.start_soon(serve)
        replies = await exchange(
            child,
            [
                {"kind": "request", "id": 7, "msg": set_k, "task": ["other", "r", "x", -1]},
                {"kind": "request", "id": 8, "msg": {**set_k, "run_id": "other"}},
                {"kind": "request", "id": 9, "msg": set_k},
            ],
        )
        await child.send_all(pack_frame({"kind": "rendered", "fields": {"f": "v"}}))
        await child.send_all(pack_frame({"kind": "result", "value": [1], "events": []}))
    by_id = {reply["id"]: decode(reply["msg"]) for reply in replies}
    assert by_id[7] == m.ErrorResponse(
        m.ErrorType.PROTOCOL,
        "a request frame holds only 'kind', 'id' and 'msg', not ['task']: a task process "
        "cannot say who it is, the supervisor knows",
    )
    assert isinstance(by_id[8], m.ErrorResponse)
    assert by_id[8].error is m.ErrorType.PROTOCOL
    assert by_id[9] == m.OkResponse()
    assert finals == [ResultFrame([1], ())]
    assert rendered == [{"f": "v"}]
    assert await rt.state.task("d", "r", "t").aget("k") == 1
    assert await rt.state.task("other", "r", "x").aget("k") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x00\x01", f"a frame announced 16777217 bytes, over the limit of {MAX_FRAME_BYTES}"),
        (b"\x00\x00\x00\x03{x}", "a frame is not UTF-8 JSON"),
        (b"\x00\x00\x00\x02\xff\xfe", "a frame is not UTF-8 JSON"),
        (b"\x00\x00\x00\x03NaN", "a frame is not UTF-8 JSON"),
        (b"\x00\x00\x00\x02[]", "a frame must be a JSON object, got list"),
        (pack_frame({"kind": "shout"}), "a frame of unknown kind 'shout'"),
        (pack_frame({"kind": "request", "id": "1", "msg": {}}), "a request frame needs an int 'id', got '1'"),
        (pack_frame({"kind": "result", "value": 1}), "a result frame holds ['events', 'kind', 'value']"),
        (pack_frame({"kind": "error", "type": 1, "message": "", "traceback": ""}), "a malformed error frame"),
        (pack_frame({"kind": "rendered", "fields": []}), "a malformed rendered frame"),
    ],
)  # fmt: skip
async def test_relay_refuses_a_corrupt_stream(relay: Any, data: bytes, message: str) -> None:
    """A stream that is not frames raises ProtocolError (the caller then kills the child)."""
    _, client, parent, child = relay
    await child.send_all(data)
    with pytest.raises(ProtocolError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        await serve_child(parent, client)


async def test_frames_split_across_reads_and_cut_short() -> None:
    """Frames arrive whole however the bytes are split; a frame cut by EOF is the end."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    data = pack_frame({"kind": "a", "x": "é" * 3}) + pack_frame({"kind": "b"})
    reader = FrameReader(receive)

    async def trickle() -> None:
        for i in range(len(data)):
            await send.send_all(data[i : i + 1])
        await send.send_all(pack_frame({"kind": "cut"})[:-2])
        await send.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert await reader.receive() == {"kind": "a", "x": "ééé"}
        assert await reader.receive() == {"kind": "b"}
        assert await reader.receive() is None


def test_a_frame_over_the_limit_or_not_json_is_refused_when_packed() -> None:
    """pack_frame says which frame and why."""
    with pytest.raises(
        ProtocolError,
        match=r"^a result frame of 16777240 bytes is over the limit of 16777216 bytes \(16 MiB\)$",
    ):
        pack_frame({"kind": "result", "v": "x" * MAX_FRAME_BYTES})
    with pytest.raises(
        ProtocolError, match=r"^a result frame must hold JSON only: Out of range float values"
    ):
        pack_frame({"kind": "result", "value": float("nan")})


def test_events_reported_by_a_child_must_be_outlets() -> None:
    """The parent rebuilds outlet_events from the task's declared outlets only."""
    dag = Dag("ev")

    @dag.task(outlets=[Asset("orders")])
    def produce() -> None: ...

    ok = outlet_events(produce, [m.AddAssetEvent("orders", "orders", {"n": 1})])
    assert [(e.asset.name, e.extra) for e in ok.emitted()] == [("orders", {"n": 1})]
    with pytest.raises(UndeclaredAssetError, match="Asset\\('secrets'\\) is not an outlet"):
        outlet_events(produce, [m.AddAssetEvent("secrets", "secrets")])
    # What the wire carries as an event must read as an AddAssetEvent.
    result = encode_frame(ResultFrame(None, (m.AddAssetEvent("orders", "orders"),)))
    assert decode_frame(result) == ResultFrame(None, (m.AddAssetEvent("orders", "orders"),))
    with pytest.raises(ProtocolError, match=r"^a malformed result frame"):
        decode_frame({**result, "events": [encode(m.OkResponse())]})


# -- choosing isolation, loading ------------------------------------------------------------------


async def test_runtime_default_isolation_and_task_override(tmp_path: Path) -> None:
    """open_runtime(isolation="process") isolates every task that does not choose."""
    dag = load("limits")
    async with open_runtime(tmp_path / "state.db", isolation="process") as rt:
        isolated = await rt.run_task(dag.get_task("runs_where"), run_id="r")
        at_home = await rt.run_task(dag.get_task("stays_home"), run_id="r")
    assert isolated.state == "success"
    assert isolated.result != os.getpid()
    assert at_home.result == os.getpid()


@pytest.mark.parametrize(
    ("dag_id", "task_id", "message"),
    [
        ("deaths", "not_in_file", "Dag 'deaths' has no task 'not_in_file' there (it has ["),
        ("elsewhere", "t", "the file defines no Dag 'elsewhere' at module level (it defines ['deaths', 'features', 'limits', 'review'])"),
    ],
)  # fmt: skip
async def test_a_task_the_child_cannot_load_fails_with_task_load_error(
    dag_id: str, task_id: str, message: str
) -> None:
    """The child loads the task by file and id; what it cannot find is named."""
    dag = Dag(dag_id)
    dag.fileloc = str(FIXTURES)
    task = dag.task(task_id=task_id, isolation="process")(lambda: None)
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r")
    assert isinstance(ti.error, TaskLoadError)
    assert str(ti.error).startswith(
        f"cannot load task {dag_id}.{task_id} in its task process from {str(FIXTURES)!r}: {message}"
    )
    assert ti.error.path == str(FIXTURES)


async def test_a_dag_built_outside_a_file_cannot_run_isolated() -> None:
    """Without dag.fileloc there is nothing to load in the child: say so, start nothing."""
    namespace: dict[str, Any] = {"Dag": Dag}
    exec("dag = Dag('nofile')", namespace)
    dag = namespace["dag"]
    assert dag.fileloc is None

    @dag.task(isolation="process")
    def t() -> None: ...

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(t, run_id="r")
    assert isinstance(ti.error, TaskLoadError)
    assert "Dag 'nofile' was not defined in a file (dag.fileloc is None)" in str(ti.error)


async def test_params_that_are_not_json_cannot_reach_a_task_process() -> None:
    """Params cross as JSON: a datetime is refused, naming where it sits."""
    task = load("limits").get_task("runs_where")
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r", params={"when": datetime(2024, 1, 1)})
    assert isinstance(ti.error, TypeError)
    assert str(ti.error).startswith(
        "the params of run 'r' must be JSON to reach the task process for limits.runs_where "
        "try 1: params['when'] is a datetime (datetime.datetime(2024, 1, 1, 0, 0)), which is "
        "not JSON"
    )


def test_dag_records_its_file_and_the_options_are_checked() -> None:
    """fileloc is the defining file; isolation and execution_timeout are validated."""
    dag = Dag("opts", default_args={"isolation": "process", "execution_timeout": 5})
    assert dag.fileloc == __file__

    @dag.task
    def a() -> None: ...

    @dag.task(isolation="none", execution_timeout=timedelta(seconds=1.5))
    def b() -> None: ...

    assert (a.isolation, a.execution_timeout) == ("process", 5.0)
    assert (b.isolation, b.execution_timeout) == ("none", 1.5)
    with pytest.raises(DagDefinitionError, match=r"isolation must be one of \['none', 'process'\]"):
        dag.task(task_id="c", isolation="thread")(lambda: None)
    with pytest.raises(DagDefinitionError, match="execution_timeout must be positive and finite"):
        dag.task(task_id="d", execution_timeout=0)(lambda: None)
    with pytest.raises(DagDefinitionError, match="execution_timeout must be seconds, a timedelta"):
        dag.task(task_id="e", execution_timeout="5")(lambda: None)  # type: ignore[arg-type]


async def test_open_runtime_checks_isolation() -> None:
    """An unknown runtime-level isolation is refused before anything opens."""
    with pytest.raises(
        ValueError, match=r"isolation must be one of \['none', 'process'\], got 'fork'"
    ):
        async with open_runtime(store=MemoryStore(), isolation="fork"):
            pass


def test_start_frame_round_trips() -> None:
    """The start frame is JSON and reads back strictly."""
    start = StartFrame(
        dag_file="/x/dags.py", dag_id="d", run_id="r", task_id="t", map_index=2,
        try_number=1, max_tries=3, params={"p": [1]}, assets=(AssetInfo("a", "s3://a"),),
        task_retention=60.0, asset_retention=None, clock_offset=1.5,
    )  # fmt: skip
    frame = json.loads(json.dumps(encode_frame(start)))
    assert decode_frame(frame) == start
    with pytest.raises(ProtocolError, match=r"^a start frame holds \['asset_retention'"):
        decode_frame({**frame, "identity": "admin"})
    with pytest.raises(ProtocolError, match=r"^a malformed start frame: .*map_index"):
        decode_frame({**frame, "map_index": "2"})


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    """Every test leaves no task process behind (each is reaped by its attempt)."""
    yield
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            assert pid == 0, f"an unreaped child process {pid} was left behind"
    except ChildProcessError:
        pass


# -- what a review found --------------------------------------------------------------------------


async def test_a_process_the_task_started_does_not_outlive_the_attempt() -> None:
    """A child that dies leaving a process behind fails at once, and that process is killed."""
    async with open_runtime(store=MemoryStore()) as rt:
        task = load("review").get_task("starts_a_process_then_dies")
        ti = await rt.run_task(task, run_id="r")
        pid = await rt.state.task("review", "r", "starts_a_process_then_dies").aget("helper_pid")
    assert isinstance(ti.error, TaskProcessError)
    assert "exited with code 3 before reporting a result" in str(ti.error)
    await trio.to_thread.run_sync(wait_for_exit, pid)


async def test_state_calls_after_the_outcome_do_not_lose_it() -> None:
    """A thread calling state after the task returned is refused; the result still arrives."""
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(load("review").get_task("beats_after_return"), run_id="r")
    assert (ti.state, ti.result) == ("success", 4_000_000)


async def test_a_second_rendered_frame_is_a_protocol_error(relay: Any) -> None:
    """Rendering happens once: a second rendered frame cannot push execution_timeout back."""
    _, client, parent, child = relay
    frame = pack_frame({"kind": "rendered", "fields": {}})
    await child.send_all(frame + frame)
    with pytest.raises(ProtocolError, match=r"^a second rendered frame"):
        await serve_child(parent, client)


async def test_absurdly_nested_json_is_a_protocol_error(relay: Any) -> None:
    """A frame nested too deeply to parse is refused as not JSON, not a RecursionError."""
    _, client, parent, child = relay
    body = b"[" * 200_000
    await child.send_all(len(body).to_bytes(4, "big") + body)
    with pytest.raises(ProtocolError, match=r"^a frame is not UTF-8 JSON \(RecursionError"):
        await serve_child(parent, client)


async def test_a_writer_holds_back_a_peer_that_does_not_read() -> None:
    """reserve() waits while more than the limit is queued for a slow reader, then lets go."""
    sender, receiver = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    writer = FrameWriter(sender, limit=1500)
    blocked = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.post(b"x" * 1000)
        writer.post(b"x" * 1000)

        async def wants_room() -> None:
            nonlocal blocked
            await writer.reserve(500)
            blocked = False

        nursery.start_soon(wants_room)
        await trio.testing.wait_all_tasks_blocked()
        assert blocked
        while blocked:
            await receiver.receive_some(4000)
            await trio.testing.wait_all_tasks_blocked()
        assert writer.budget.held == 500
        writer.release(500)
        assert writer.budget.held == 0
        assert writer.budget.peak == 2000
        writer.close()
