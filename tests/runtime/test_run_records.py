"""A run writes its records as it goes, and rt.runs reads them back (every store)."""

from __future__ import annotations

import functools
import itertools
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from stateward import (
    Dag,
    MemoryStore,
    Runtime,
    ShellOperator,
    StateScopeError,
    StoreError,
    TaskNode,
    open_runtime,
)
from stateward._protocol import messages as m
from stateward._records import AttemptRecord
from stateward._runtime.supervisor import Caller
from stateward.store import base as ops
from stateward.store.base import TaskScope
from tests.conftest import FakeWallClock


def flaky_dag(fail_times: int, retries: int = 2) -> Dag:
    dag = Dag("flaky", default_args={"retries": retries, "retry_delay": 0})
    tries = {"n": 0}

    @dag.task
    def extract() -> dict[str, Any]:
        tries["n"] += 1
        if tries["n"] <= fail_times:
            raise ValueError(f"bad row {tries['n']}")
        return {"rows": 3}

    @dag.task
    def load() -> None:
        return None

    extract >> load
    return dag


async def test_a_run_records_its_dags_graph(rt: Runtime) -> None:
    """A run's record holds the Dag's tasks in order with their upstream ids and whether
    each is mapped; a one-instance run records it too."""
    dag = Dag("g")

    @dag.task
    def parts() -> list[int]:
        return [1, 2]

    @dag.task
    def each(n: int) -> int:
        return n

    @dag.task
    def alone() -> None:
        return None

    @dag.task
    def report() -> None:
        return None

    parts >> each.expand(n=[1, 2]) >> report
    alone >> report
    await rt.run_dag(dag, run_id="r1")
    record = await rt.runs.get("g", "r1")
    assert record is not None
    assert sorted(record.graph, key=lambda n: n.task_id) == [
        TaskNode("alone"), TaskNode("each", ("parts",), mapped=True), TaskNode("parts"),
        TaskNode("report", ("alone", "each")),
    ]  # fmt: skip
    assert record.graph[-1].task_id == "report"  # topological order
    await rt.run_task(alone, run_id="one")
    single = await rt.runs.get("g", "one")
    assert single is not None
    assert single.graph == record.graph


async def test_records_of_a_run_with_a_retry(rt: Runtime, wall_clock: FakeWallClock) -> None:
    """The run, each instance and each attempt are recorded: the failed try with its
    error, the successful one with its JSON result, host and pid."""
    result = await rt.run_dag(flaky_dag(fail_times=1), run_id="r1")
    assert result.state == "success"
    record = await rt.runs.get("flaky", "r1")
    assert record is not None
    assert (record.state, record.started_at, record.ended_at) == (
        "success", wall_clock.now, wall_clock.now,
    )  # fmt: skip
    extract, load = record.instances
    assert (extract.task_id, extract.state, extract.try_number) == ("extract", "success", 2)
    failed, ok = extract.attempts
    assert (failed.try_number, failed.state, failed.error_type) == (1, "failed", "ValueError")
    assert failed.error_message == "bad row 1"
    assert failed.error_traceback is not None
    assert "ValueError: bad row 1" in failed.error_traceback
    assert (ok.state, ok.result, ok.result_is_json, ok.error_type) == (
        "success", {"rows": 3}, True, None,
    )  # fmt: skip
    assert (ok.host, ok.pid, ok.log) == (socket.gethostname(), os.getpid(), "")
    assert (load.task_id, load.state, load.try_number, len(load.attempts)) == (
        "load", "success", 1, 1,
    )  # fmt: skip


async def test_failed_run_records_upstream_failed(rt: Runtime) -> None:
    """A run whose task fails every try is recorded failed; its downstream instance is
    recorded upstream_failed with no attempt."""
    await rt.run_dag(flaky_dag(fail_times=9, retries=1), run_id="r2")
    record = await rt.runs.get("flaky", "r2")
    assert record is not None
    assert record.state == "failed"
    extract, load = record.instances
    assert (extract.state, extract.try_number, len(extract.attempts)) == ("failed", 2, 2)
    assert (load.state, load.try_number, load.attempts) == ("upstream_failed", 0, ())


async def test_rendered_fields_and_non_json_result(rt: Runtime) -> None:
    """An attempt keeps its rendered template fields; a result JSON cannot hold is kept
    as its repr."""
    dag = Dag("render")
    ShellOperator(task_id="echo", command="echo << run_id >>", dag=dag)

    @dag.task
    def odd() -> object:
        return {1, 2}

    await rt.run_dag(dag, run_id="r3")
    record = await rt.runs.get("render", "r3")
    assert record is not None
    by_task = {ti.task_id: ti.attempts[-1] for ti in record.instances}
    assert by_task["echo"].rendered["command"] == "echo r3"
    assert (by_task["odd"].result, by_task["odd"].result_is_json) == ("{1, 2}", False)


async def test_a_running_attempt_is_recorded_before_it_ends(rt: Runtime) -> None:
    """The attempt's record exists (running) while the task runs, not only at the end."""
    dag = Dag("slow")
    started, release = trio.Event(), trio.Event()

    @dag.task
    async def wait() -> None:
        started.set()
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(rt.run_dag, dag, run_id="r4"))
        await started.wait()
        record = await rt.runs.get("slow", "r4")
        release.set()
    assert record is not None
    assert record.state == "running"
    (ti,) = record.instances
    assert (ti.state, ti.try_number, ti.ended_at) == ("running", 1, None)
    assert [(a.state, a.ended_at) for a in ti.attempts] == [("running", None)]


async def test_runs_list_filters_and_get_of_unknown(rt: Runtime, wall_clock: FakeWallClock) -> None:
    """rt.runs.list lists newest first, filtered by Dag and state; an unknown run is None."""
    await rt.run_dag(flaky_dag(fail_times=9, retries=0), run_id="a")
    wall_clock.advance(1)
    await rt.run_dag(flaky_dag(fail_times=0), run_id="b")
    assert [r.run_id for r in await rt.runs.list()] == ["b", "a"]
    assert [r.run_id for r in await rt.runs.list(state="failed")] == ["a"]
    assert [r.run_id for r in await rt.runs.list(dag_id="other")] == []
    assert [r.run_id for r in await rt.runs.list(limit=1)] == ["b"]
    assert (await rt.runs.list())[0].instances == ()
    assert await rt.runs.get("flaky", "nope") is None


@pytest.mark.parametrize(
    "request_",
    [
        m.RecordDagRun("d", "r", "success", 1.0),
        m.EndDagRun("d", "r", 1.0, 2.0, (("t", -1),)),
        m.RecordTaskInstance("d", "r", "t", -1, "success", 1),
        m.RecordTaskAttempt("d", "r", "t", -1, "success", AttemptRecord(1, "success", 1.0)),
        m.ListDagRuns(),
        m.GetDagRun("d", "r"),
        m.ListAssetEvents(name="orders"),
    ],
)
async def test_task_clients_may_not_send_record_requests(rt: Runtime, request_: Any) -> None:
    """Run records are written and read only by out-of-band clients (the runner, rt.runs)."""
    scope = TaskScope("d", "r", "t", -1)
    client = rt.client(Caller(task=scope, writer=None))
    with pytest.raises(StateScopeError, match=f"may not send {type(request_).__name__}"):
        await client.request(request_)


class NoAttemptRecords(MemoryStore):
    """A store that fails every batch holding an attempt's end record (and only those)."""

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        if any(isinstance(op, ops.RecordAttempt) for op in batch):
            raise StoreError("disk full (simulated)")
        return await super().execute(batch, now=now)


async def test_a_record_the_store_fails_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Records are not the run's work: a store failure writing an attempt's end is a
    warning, the tasks still run and the run still ends recorded (its instances stay
    recorded as they started, `running`)."""
    dag = flaky_dag(fail_times=0)
    async with open_runtime(store=NoAttemptRecords()) as rt:
        result = await rt.run_dag(dag, run_id="r")
        record = await rt.runs.get("flaky", "r")
    assert result.state == "success"
    assert record is not None
    assert record.state == "success"
    assert {ti.state for ti in record.instances} == {"running"}
    assert "could not record the end of an attempt: disk full (simulated)" in caplog.text


class SeenOps(MemoryStore):
    """A MemoryStore that keeps every operation it executes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[ops.Op] = []

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        self.seen.extend(batch)
        return await super().execute(batch, now=now)


async def test_run_task_reads_the_run_without_its_attempts() -> None:
    """rt.run_task reads the run's instances, not their attempts (so its cost does not
    grow with the tries made in the run), once, before the attempt; the store ends the
    run by its instances in the write that records its end."""
    dag = flaky_dag(fail_times=0)
    store = SeenOps()
    async with open_runtime(store=store) as rt:
        for _ in range(3):
            result = await rt.run_task(dag.tasks["extract"], run_id="r")
        reads = [op for op in store.seen if isinstance(op, ops.GetRun)]
        ends = [op for op in store.seen if isinstance(op, ops.EndRun)]
        record = await rt.runs.get("flaky", "r")
    assert len(reads) == 3
    assert not any(op.attempts for op in reads)
    assert [op.instances for op in ends] == [(("extract", -1), ("load", -1))] * 3
    assert (result.state, result.try_number) == ("success", 3)
    assert record is not None
    assert [ti.try_number for ti in record.instances if ti.task_id == "extract"] == [3]
    assert record.state == "queued"  # the Dag's other task has not run


async def test_a_failed_run_task_ends_the_run_failed_after_one_read() -> None:
    """A failed instance fails its one-instance run whatever else the run holds: the
    run is read once (before the attempt), not again to decide."""
    dag = flaky_dag(fail_times=1, retries=0)
    store = SeenOps()
    async with open_runtime(store=store) as rt:
        result = await rt.run_task(dag.tasks["extract"], run_id="r")
        reads = [op for op in store.seen if isinstance(op, ops.GetRun)]
        record = await rt.runs.get("flaky", "r")
    assert result.state == "failed"
    assert len(reads) == 1
    assert record is not None
    assert record.state == "failed"


async def test_run_task_ends_a_run_success_once_every_instance_has(rt: Runtime) -> None:
    """Each rt.run_task ends the run in the store: ``queued`` while an instance of the
    Dag has not succeeded, ``success`` once every one has (docs/runs.md)."""
    dag = flaky_dag(fail_times=0)
    await rt.run_task(dag.tasks["load"], run_id="r")
    first = await rt.runs.get("flaky", "r")
    await rt.run_task(dag.tasks["extract"], run_id="r")
    second = await rt.runs.get("flaky", "r")
    assert first is not None
    assert second is not None
    assert (first.state, second.state) == ("queued", "success")
    assert second.ended_at is not None
    assert [n.task_id for n in second.graph] == ["extract", "load"]  # the graph is kept


async def test_end_run_decides_by_the_records_before_it_in_its_batch(rt: Runtime) -> None:
    """EndRun sees the instance records written before it in the same batch."""
    attempt = AttemptRecord(1, "success", 1.0, 2.0)
    answers = await rt.store.execute(  # type: ignore[attr-defined]
        [
            ops.RecordRun("d", "r", "running", 1.0),
            ops.RecordAttempt("d", "r", "t", -1, "success", attempt),
            ops.EndRun("d", "r", 1.0, 3.0, (("t", -1),)),
            ops.EndRun("d", "r", 1.0, 3.0, (("t", -1), ("u", -1))),
        ],
        now=3.0,
    )
    assert answers[2:] == ["success", "queued"]
    record = await rt.runs.get("d", "r")
    assert record is not None
    assert (record.state, record.ended_at) == ("queued", 3.0)


async def test_quick_instances_take_the_next_lease_ahead_and_record_when_they_started(
    rt: Runtime, wall_clock: FakeWallClock
) -> None:
    """A worker of quick instances holds its next instance's lease while the current one
    runs (recorded running); each attempt's record gives the time its code started."""
    dag = Dag("ahead", max_active_tasks=1)
    running: list[int] = []

    @dag.task
    def quick(i: int) -> None:
        wall_clock.advance(1.0)
        record = trio.from_thread.run(rt.runs.get, "ahead", "r")
        running.append(sum(1 for ti in record.instances if ti.state == "running"))

    quick.expand(i=[0, 1, 2, 3])
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert running[0] == 1  # nothing known of the task's pace yet
    assert max(running) == 2  # this instance, and the next taken ahead
    record = await rt.runs.get("ahead", "r")
    assert record is not None
    spans = sorted((ti.attempts[0].started_at, ti.attempts[0].ended_at) for ti in record.instances)
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended  # not from when its lease was taken


async def test_an_instance_taken_ahead_runs_while_the_workers_instance_waits_to_retry(
    rt: Runtime,
) -> None:
    """The instance a worker took ahead is handed to a task of its own when the worker's
    current instance fails and waits to retry: it does not wait behind the retry."""
    dag = Dag("handoff", max_active_tasks=1, default_args={"retries": 1, "retry_delay": 0.2})
    started: list[int] = []
    lock = threading.Lock()
    third_ran = threading.Event()

    @dag.task
    def step(i: int) -> None:
        with lock:
            first_try = i not in started
            started.append(i)
            place = len(set(started))
        if first_try and place == 2:
            raise ValueError("fails once")
        if first_try and place == 3:
            third_ran.set()
        if not first_try:
            assert third_ran.wait(30), "the instance taken ahead waited behind the retry"

    step.expand(i=[0, 1, 2])
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert sorted(ti.try_number for ti in result.task_instances) == [1, 1, 2]


async def test_an_instance_taken_ahead_does_not_wait_behind_one_that_turns_out_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two slots: the instance a worker took ahead while its current one was expected to
    be quick starts on its own once that one has run past the bound, instead of waiting
    for it (and so holding its lease) while the other slot has nothing left to do."""
    seen: list[float] = []
    dag = Dag("slow", max_active_tasks=2)

    @dag.task
    async def step(i: int) -> None:
        seen.append(trio.current_time())
        if len(seen) == 4:
            await trio.sleep(10)

    step.expand(i=list(range(6)))
    async with open_runtime(store=MemoryStore()) as rt:
        start = trio.current_time()
        result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert len(seen) == 6
    assert max(seen) - start < 1  # none waited behind the slow one
