"""Run records on every store: runs, task instances and attempts, written and read back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stateward._records import AttemptRecord, DagRunRecord, TaskInstanceRecord
from stateward.store import base as ops
from stateward.store.base import Store

FAILED = AttemptRecord(
    1, "failed", 10.0, 11.0, "ValueError", "bad row 3", "Traceback ...\nValueError: bad row 3",
    {"bash_command": "echo 7"}, None, True, "host-a", 4242,
)  # fmt: skip
OK = AttemptRecord(2, "success", 12.0, 13.0, rendered={}, result={"rows": [1, 2]}, host="h", pid=1)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store of each kind."""
    async with make_store() as opened:
        yield opened


async def run(store: Store, *batch: ops.Op, now: float = 100.0) -> list[Any]:
    return await store.execute(list(batch), now=now)


async def test_unknown_run_is_none(store: Store) -> None:
    """A run never recorded reads as None, and lists nothing."""
    assert await run(store, ops.GetRun("d", "nope"), ops.ListRuns()) == [None, ()]


async def test_run_with_instances_and_attempts_reads_back(store: Store) -> None:
    """A run's record comes back with its instances (by task, map index) and their
    attempts (by try), every field as written; an attempt's record sets its instance's
    state, try number, start and end."""
    await run(
        store,
        ops.RecordRun("d", "r1", "running", 10.0),
        ops.RecordAttempt("d", "r1", "t", -1, "running", AttemptRecord(1, "running", 10.0)),
        ops.RecordInstance("d", "r1", "m", 1, "success", 1, 10.5, 10.6),
        ops.RecordInstance("d", "r1", "m", 0, "upstream_failed", 0),
    )
    # Written again as they end: the upsert replaces the row.
    await run(
        store,
        ops.RecordAttempt("d", "r1", "t", -1, "up_for_retry", FAILED),
        ops.RecordAttempt("d", "r1", "t", -1, "success", OK),
        ops.RecordRun("d", "r1", "success", 10.0, 13.0),
    )
    (got,) = await run(store, ops.GetRun("d", "r1"))
    assert got == DagRunRecord(
        "d", "r1", "success", 10.0, 13.0,
        (
            TaskInstanceRecord("m", 0, "upstream_failed", 0),
            TaskInstanceRecord("m", 1, "success", 1, 10.5, 10.6),
            TaskInstanceRecord("t", -1, "success", 2, 12.0, 13.0, (FAILED, OK)),
        ),
    )  # fmt: skip


async def test_result_that_is_not_json_is_kept_as_text(store: Store) -> None:
    """A result recorded as its repr reads back as that text, flagged as not JSON;
    rendered fields JSON cannot hold are kept as their repr."""
    attempt = AttemptRecord(
        1, "success", 1.0, 2.0, rendered={"when": {1, 2}}, result="<object at 0x1>",
        result_is_json=False,
    )  # fmt: skip
    await run(
        store,
        ops.RecordRun("d", "r", "success", 1.0, 2.0),
        ops.RecordAttempt("d", "r", "t", -1, "success", attempt),
    )
    (got,) = await run(store, ops.GetRun("d", "r"))
    (recorded,) = got.instances[0].attempts
    assert (recorded.result, recorded.result_is_json) == ("<object at 0x1>", False)
    assert recorded.rendered == {"when": "{1, 2}"}


async def test_list_runs_newest_first_filtered_and_limited(store: Store) -> None:
    """Runs list newest start first, without instances, by DAG and state, up to limit."""
    await run(
        store,
        ops.RecordRun("a", "r1", "success", 1.0, 2.0),
        ops.RecordRun("a", "r2", "failed", 3.0, 4.0),
        ops.RecordRun("b", "r1", "running", 5.0),
        ops.RecordInstance("b", "r1", "t", -1, "running", 1, 5.0),
    )
    listed = await run(
        store,
        ops.ListRuns(),
        ops.ListRuns(dag_id="a"),
        ops.ListRuns(state="failed"),
        ops.ListRuns(dag_id="a", state="running"),
        ops.ListRuns(limit=1),
    )
    ids = [[(r.dag_id, r.run_id) for r in runs] for runs in listed]
    assert ids == [
        [("b", "r1"), ("a", "r2"), ("a", "r1")],
        [("a", "r2"), ("a", "r1")],
        [("a", "r2")],
        [],
        [("b", "r1")],
    ]
    assert listed[0][0] == DagRunRecord("b", "r1", "running", 5.0)


async def test_records_are_writes_and_reads_are_not(store: Store) -> None:
    """Recording counts as a write transaction; reading records does not."""
    before = store.write_transactions
    await run(store, ops.RecordRun("d", "r", "running", 1.0))
    await run(store, ops.GetRun("d", "r"), ops.ListRuns())
    assert store.write_transactions == before + 1
