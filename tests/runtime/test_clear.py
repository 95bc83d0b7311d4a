"""Clearing a run's instances, records of one-instance runs, retention of run records
and attempt logs kept in the store (every store)."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pytest
import trio

from stateward import NEVER_EXPIRE, Dag, MemoryStore, RunNotFoundError, Runtime, open_runtime
from tests.conftest import FakeWallClock


def diamond(executed: list[str]) -> Dag:
    """a >> (b, c mapped 2 ways) >> d; each instance counts its runs outside the store
    and keeps a key in its task state."""
    dag = Dag("dia", default_args={"retries": 1, "retry_delay": 0})

    @dag.task
    def a(task_state: Any) -> str:
        executed.append("a")
        task_state.set("seen", task_state.get("seen", 0) + 1)
        return "a"

    @dag.task
    def b(task_state: Any) -> str:
        executed.append("b")
        task_state.set("seen", task_state.get("seen", 0) + 1)
        return "b"

    @dag.task
    def c(i: int, task_state: Any) -> int:
        executed.append(f"c[{i}]")
        task_state.set("seen", task_state.get("seen", 0) + 1)
        return i

    @dag.task
    def d() -> str:
        executed.append("d")
        return "d"

    a >> [b, c.expand(i=[0, 1])] >> d
    return dag


async def seen(rt: Runtime, task_id: str, map_index: int = -1) -> Any:
    return await rt.state.task("dia", "r", task_id, map_index).aget("seen")


async def test_clear_then_resume_reruns_exactly_the_cleared_instances(rt: Runtime) -> None:
    """After a run succeeded, clearing some instances makes the next run of the run id
    run those (counted outside the store) and nothing else, their tries continuing with
    a fresh retry budget; their task state was discarded, the others' kept."""
    executed: list[str] = []
    dag = diamond(executed)
    assert (await rt.run_dag(dag, run_id="r")).state == "success"
    cleared = await rt.clear("dia", "r", ["c", "d"])
    assert cleared == [("c", 0), ("c", 1), ("d", -1)]
    record = await rt.runs.get("dia", "r")
    assert record is not None
    assert record.state == "queued"
    assert {ti.task_id: ti.state for ti in record.instances} == {
        "a": "success", "b": "success", "c": "cleared", "d": "cleared",
    }  # fmt: skip
    assert await seen(rt, "c", 0) is None
    executed.clear()
    again = await rt.run_dag(dag, run_id="r")
    assert again.state == "success"
    assert sorted(executed) == ["c[0]", "c[1]", "d"]
    assert [again.ti("c", i).try_number for i in (0, 1)] == [2, 2]
    assert again.ti("d").try_number == 2
    assert again.ti("b").try_number == 1  # from its record
    assert (await seen(rt, "c", 0), await seen(rt, "b")) == (1, 1)
    record = await rt.runs.get("dia", "r")
    assert record is not None
    assert record.state == "success"


async def test_clear_keep_task_state_and_failed_only(rt: Runtime) -> None:
    """keep_task_state keeps the cleared instances' task state for their next try;
    failed_only clears only instances that failed or were upstream_failed."""
    executed: list[str] = []
    dag = diamond(executed)
    await rt.run_dag(dag, run_id="r")
    assert await rt.clear("dia", "r", failed_only=True) == []
    assert await rt.clear("dia", "r", ["a"], keep_task_state=True) == [("a", -1)]
    executed.clear()
    await rt.run_dag(dag, run_id="r")
    assert executed == ["a"]
    assert await seen(rt, "a") == 2  # the cleared try found its state


async def test_clear_failed_only_after_a_failure(rt: Runtime) -> None:
    """failed_only selects the failed and upstream_failed instances of a failed run."""
    dag = Dag("f")
    broken = {"on": True}

    @dag.task
    def ok() -> None:
        pass

    @dag.task
    def bad() -> None:
        if broken["on"]:
            raise RuntimeError("down")

    @dag.task
    def after() -> None:
        pass

    bad >> after
    assert (await rt.run_dag(dag, run_id="r")).state == "failed"
    assert await rt.clear("f", "r", failed_only=True) == [("after", -1), ("bad", -1)]
    broken["on"] = False
    again = await rt.run_dag(dag, run_id="r")
    assert (again.state, again.ti("bad").try_number, again.ti("after").try_number) == (
        "success", 2, 1,
    )  # fmt: skip


async def test_clear_of_an_unknown_run_is_refused(rt: Runtime) -> None:
    """Clearing a run with no record raises RunNotFoundError (a LookupError) naming it."""
    with pytest.raises(RunNotFoundError, match=r"no run 'nope' of Dag 'dia' is recorded") as info:
        await rt.clear("dia", "nope")
    assert (info.value.dag_id, info.value.run_id) == ("dia", "nope")
    assert isinstance(info.value, LookupError)
    with pytest.raises(TypeError, match=r"use \['c'\]"):
        await rt.clear("dia", "nope", "c")


async def test_run_task_records_one_instance_without_claiming_the_others(rt: Runtime) -> None:
    """rt.run_task records its instance in the run; the run reads `queued` while other
    instances have yet to run, and a later run of the run id runs exactly those."""
    executed: list[str] = []
    dag = diamond(executed)
    one = await rt.run_task(dag.tasks["c"], run_id="r", map_index=1)
    assert (one.state, one.try_number) == ("success", 1)
    record = await rt.runs.get("dia", "r")
    assert record is not None
    assert record.state == "queued"
    assert [(ti.task_id, ti.map_index, ti.state) for ti in record.instances] == [
        ("c", 1, "success")
    ]
    again = await rt.run_task(dag.tasks["c"], run_id="r", map_index=1)
    assert again.try_number == 2  # tries continue from the record
    executed.clear()
    full = await rt.run_dag(dag, run_id="r")
    assert full.state == "success"
    assert sorted(executed) == ["a", "b", "c[0]", "d"]
    assert full.ti("c", 1).try_number == 2


async def test_run_task_of_the_last_instance_succeeds_the_run(rt: Runtime) -> None:
    """A one-instance run that fails marks the run failed; once every instance has
    succeeded the run reads success."""
    dag = Dag("one")
    broken = {"on": True}

    @dag.task
    def only() -> None:
        if broken["on"]:
            raise RuntimeError("no")

    assert (await rt.run_task(dag.tasks["only"], run_id="r")).state == "failed"
    record = await rt.runs.get("one", "r")
    assert record is not None
    assert record.state == "failed"
    broken["on"] = False
    assert (await rt.run_task(dag.tasks["only"], run_id="r")).try_number == 2
    record = await rt.runs.get("one", "r")
    assert record is not None
    assert (record.state, record.instances[0].try_number) == ("success", 2)


async def test_runs_cleanup_removes_old_ended_runs(rt: Runtime, wall_clock: FakeWallClock) -> None:
    """rt.runs.cleanup removes the records of runs that ended more than older_than ago
    (a dry run counts them); a newer run stays; task state is untouched."""
    executed: list[str] = []
    dag = diamond(executed)
    await rt.run_dag(dag, run_id="r")
    await rt.state.task("dia", "r", "a").aset("kept", 1, retention=NEVER_EXPIRE)
    wall_clock.advance(40 * 86400)
    await rt.run_dag(dag, run_id="new")
    assert await rt.runs.cleanup(dry_run=True) == 1
    assert await rt.runs.cleanup(timedelta(days=50)) == 0
    assert await rt.runs.cleanup() == 1
    assert [r.run_id for r in await rt.runs.list()] == ["new"]
    assert await rt.state.task("dia", "r", "a").aget("kept") == 1
    wall_clock.advance(1)
    assert await rt.runs.cleanup(0) == 1
    with pytest.raises(ValueError, match="older_than must be"):
        await rt.runs.cleanup(-1)


async def test_attempt_logs_are_kept_in_the_store(rt: Runtime) -> None:
    """Each attempt's captured output is its record's log, read by rt.runs.get and
    rt.runs.get_instance."""
    dag = Dag("talk", default_args={"retries": 1, "retry_delay": 0})

    @dag.task
    def speak(ti: Any) -> None:
        print(f"try {ti.try_number} speaking")
        if ti.try_number == 1:
            raise RuntimeError("again")

    await rt.run_dag(dag, run_id="r")
    instance = await rt.runs.get_instance("talk", "r", "speak")
    assert instance is not None
    assert [a.log for a in instance.attempts] == ["try 1 speaking\n", "try 2 speaking\n"]
    record = await rt.runs.get("talk", "r")
    assert record is not None
    assert record.instances[0].attempts == instance.attempts
    assert await rt.runs.get_instance("talk", "r", "nope") is None


async def test_a_running_attempts_output_is_recorded_as_it_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While an attempt runs, what it wrote is recorded about once a second (only when
    it wrote something new), so a reader sees it before the attempt ends."""
    go_on = trio.Event()

    dag = Dag("slow")

    @dag.task
    async def chatty() -> None:
        print("first part")
        await go_on.wait()
        print("second part")

    async def running_log(rt: Runtime) -> str | None:
        instance = await rt.runs.get_instance("slow", "r", "chatty")
        if instance is None or not instance.attempts:
            return None
        return instance.attempts[-1].log

    async with open_runtime(store=MemoryStore()) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(rt.run_dag, dag, run_id="r"))
            # Polls the store as a reader would (`stateward logs --follow`), in virtual time.
            while await running_log(rt) != "first part\n":  # noqa: ASYNC110
                await trio.sleep(0.25)
            writes = rt.store.write_transactions
            await trio.sleep(5)  # nothing new written: nothing recorded
            assert rt.store.write_transactions == writes
            go_on.set()
        assert await running_log(rt) == "first part\nsecond part\n"
