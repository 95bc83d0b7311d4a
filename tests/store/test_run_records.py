"""Run records on every store: runs, task instances and attempts, written and read back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from stateward._records import (
    AttemptRecord,
    DagRunRecord,
    ItemPlace,
    TaskInstanceRecord,
    TaskNode,
)
from stateward.store import base as ops
from stateward.store.base import Store, TaskScope

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


GRAPH = (
    TaskNode("extract", (), True), TaskNode("load", ("extract",)),
)  # fmt: skip


async def test_a_runs_graph_is_kept_until_a_new_one_is_given(store: Store) -> None:
    """A run's record keeps the Dag's graph given with it; a record without one leaves
    it; a new one replaces it; a run recorded without any has an empty graph."""
    await run(store, ops.RecordRun("d", "r", "running", 1.0, graph=GRAPH))
    await run(store, ops.RecordRun("d", "r", "success", 1.0, 2.0))
    await run(store, ops.RecordRun("d", "old", "success", 0.5, 0.6))
    got, listed = await run(store, ops.GetRun("d", "r"), ops.ListRuns())
    assert (got.state, got.graph) == ("success", GRAPH)
    assert [(r.run_id, r.graph) for r in listed] == [("r", GRAPH), ("old", ())]
    again = (TaskNode("load"),)
    await run(store, ops.RecordRun("d", "r", "running", 1.0, graph=again))
    assert (await run(store, ops.GetRun("d", "r")))[0].graph == again


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


async def _seed_run(store: Store, state: str = "failed", ended_at: float | None = 20.0) -> None:
    """Run d/r: t succeeded, u[0] failed after 2 tries, u[1] upstream_failed, each with
    task state; plus task state of another run."""
    task_state = [
        ops.Put(ops.TaskScope("d", run_id, task, index), "k", "1", None, None)
        for run_id, task, index in (("r", "t", -1), ("r", "u", 0), ("r", "u", 1), ("r2", "u", 0))
    ]
    await run(
        store,
        ops.RecordRun("d", "r", state, 10.0, ended_at),
        ops.RecordAttempt("d", "r", "t", -1, "success", OK),
        ops.RecordAttempt("d", "r", "u", 0, "failed", FAILED),
        ops.RecordAttempt("d", "r", "u", 0, "failed", attrs.evolve(FAILED, try_number=2)),
        ops.RecordInstance("d", "r", "u", 1, "upstream_failed", 0),
        *task_state,
    )


async def _keys(store: Store, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
    (items,) = await run(store, ops.Items(ops.TaskScope("d", run_id, task_id, map_index)))
    return dict(items)


async def test_clear_run_marks_selected_instances_and_discards_their_state(store: Store) -> None:
    """Clearing sets the selected instances to `cleared` with their try numbers kept,
    deletes their task state (no one else's) and queues the run, in one operation."""
    await _seed_run(store)
    (cleared,) = await run(store, ops.ClearRun("d", "r", ("u",)))
    assert cleared == [("u", 0), ("u", 1)]
    (got,) = await run(store, ops.GetRun("d", "r"))
    assert got.state == "queued"
    assert [(ti.task_id, ti.map_index, ti.state, ti.try_number) for ti in got.instances] == [
        ("t", -1, "success", 2),
        ("u", 0, "cleared", 2),
        ("u", 1, "cleared", 0),
    ]
    assert len(got.instances[1].attempts) == 2  # the attempts stay on record
    assert await _keys(store, "r", "u", 0) == {}
    assert await _keys(store, "r", "u", 1) == {}
    assert await _keys(store, "r", "t", -1) == {"k": 1}
    assert await _keys(store, "r2", "u", 0) == {"k": 1}


async def test_clear_run_failed_only_and_keep_task_state(store: Store) -> None:
    """`failed_only` clears failed and upstream_failed instances only; `keep_task_state`
    leaves their task state."""
    await _seed_run(store)
    (cleared,) = await run(store, ops.ClearRun("d", "r", failed_only=True, keep_task_state=True))
    assert cleared == [("u", 0), ("u", 1)]
    assert await _keys(store, "r", "u", 0) == {"k": 1}
    (cleared,) = await run(store, ops.ClearRun("d", "r", None))
    assert cleared == [("t", -1), ("u", 0), ("u", 1)]


async def test_clear_run_of_nothing(store: Store) -> None:
    """An unknown run clears nothing and answers None; a selection that matches no
    instance leaves the run's state as it was."""
    await _seed_run(store)
    results = await run(
        store, ops.ClearRun("d", "nope"), ops.ClearRun("d", "r", ("zzz",)), ops.GetRun("d", "r")
    )
    assert results[:2] == [None, []]
    assert results[2].state == "failed"


async def test_get_instance_reads_one_instance_with_its_attempts(store: Store) -> None:
    """One instance's record comes back with its attempts; an unknown one is None."""
    await _seed_run(store)
    got, missing = await run(
        store, ops.GetInstance("d", "r", "u", 0), ops.GetInstance("d", "r", "u", 7)
    )
    assert missing is None
    assert (got.task_id, got.map_index, got.state, got.try_number) == ("u", 0, "failed", 2)
    assert [a.try_number for a in got.attempts] == [1, 2]


async def test_attempt_log_reads_back(store: Store) -> None:
    """An attempt's log is kept with it, and an upsert replaces it."""
    await run(store, ops.RecordRun("d", "r", "running", 1.0))
    for text in ("first\n", "first\nsecond\n"):
        attempt = AttemptRecord(1, "running", 1.0, log=text)
        await run(store, ops.RecordAttempt("d", "r", "t", -1, "running", attempt))
    (got,) = await run(store, ops.GetInstance("d", "r", "t", -1))
    assert got.attempts[0].log == "first\nsecond\n"


async def test_cleanup_runs_removes_ended_runs_before_the_cutoff(store: Store) -> None:
    """Retention removes runs that ended (success or failed) before the cutoff, with
    their instances and attempts; a dry run counts them; running and queued runs and
    later ones stay; task state is not touched."""
    await _seed_run(store, "failed", ended_at=20.0)
    await run(
        store,
        ops.RecordRun("d", "ok", "success", 1.0, 5.0),
        ops.RecordRun("d", "late", "success", 1.0, 50.0),
        ops.RecordRun("d", "live", "running", 1.0),
        ops.RecordRun("d", "q", "queued", 1.0, 5.0),
        ops.RecordInstance("d", "live", "t", -1, "running", 1, 1.0),
    )
    assert await run(store, ops.CleanupRuns(30.0, dry_run=True)) == [2]
    assert len(await run(store, ops.GetRun("d", "r"))) == 1
    assert await run(store, ops.CleanupRuns(30.0)) == [2]
    got = await run(store, *(ops.GetRun("d", r) for r in ("r", "ok", "late", "live", "q")))
    assert [g is None for g in got] == [True, True, False, False, False]
    assert await run(store, ops.GetInstance("d", "r", "u", 0)) == [None]
    assert len(got[3].instances) == 1
    assert await _keys(store, "r", "u", 0) == {"k": 1}
    assert await run(store, ops.CleanupRuns(30.0)) == [0]


async def test_record_items_places_an_expansion_and_a_later_one_moves_them(store: Store) -> None:
    """RecordItems places each item at its index in one operation; a later expansion
    (or a single RecordItem) moves an item and wins at the indices it names, listed
    with the latest item's label."""
    places = ((0, "j:a", "a"), (1, "j:b", "b"), (2, "#2", None))
    await run(store, ops.RecordItems("d", "r", "t", places))
    (first,) = await run(store, ops.ListItems("d", "r"))
    assert first == (ItemPlace("t", 0, "a"), ItemPlace("t", 1, "b"), ItemPlace("t", 2, None))
    await run(store, ops.RecordItems("d", "r", "t", ((0, "j:b", "b"), (1, "j:c", "c"))))
    await run(store, ops.RecordItem("d", "r", "t", 1, "j:d", "d"))
    (later,) = await run(store, ops.ListItems("d", "r"))
    assert later == (ItemPlace("t", 0, "b"), ItemPlace("t", 1, "d"), ItemPlace("t", 2, None))
    # An item listed twice in one expansion stands where it is last.
    await run(store, ops.RecordItems("d", "r", "u", ((0, "j:x", "x"), (1, "j:x", "x"))))
    (twice,) = await run(store, ops.ListItems("d", "r"))
    assert [p for p in twice if p.task_id == "u"] == [ItemPlace("u", 1, "x")]


async def test_record_items_adopts_state_kept_by_position(store: Store) -> None:
    """State written by position before the expansion was recorded is adopted, with
    its history, by the item placed there, unless that item holds state already."""

    def at(item: str) -> TaskScope:
        return TaskScope("d", "r", "t", item=item)

    await run(
        store,
        ops.Put(at("#0"), "k", '"seeded"', None, None),
        ops.Put(at("#1"), "k", '"by position"', None, None),
        ops.Put(at("j:b"), "k", '"own"', None, None),
    )
    places = ((0, "j:a", "a"), (1, "j:b", "b"), (2, "j:c", "c"))
    await run(store, ops.RecordItems("d", "r", "t", places))
    got = await run(
        store,
        *(ops.Get(at(item), "k") for item in ("j:a", "j:b", "j:c", "#0", "#1")),
        ops.History(at("j:a"), "k"),
    )
    assert got[:5] == ["seeded", "own", None, None, "by position"]
    assert [v.value for v in got[5]] == ["seeded"]


async def test_get_run_without_attempts(store: Store) -> None:
    """GetRun with attempts=False gives the run and its instances (state, try number)
    without their attempts."""
    await _seed_run(store)
    full, bare = await run(store, ops.GetRun("d", "r"), ops.GetRun("d", "r", attempts=False))
    assert bare == attrs.evolve(
        full, instances=tuple(attrs.evolve(ti, attempts=()) for ti in full.instances)
    )
    assert any(ti.attempts for ti in full.instances)
    assert await run(store, ops.GetRun("d", "nope", attempts=False)) == [None]
