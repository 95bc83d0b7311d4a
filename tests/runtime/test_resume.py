"""Running a run id that exists resumes it (every store): what succeeded is not run
again, the rest runs with try numbers continuing and a fresh retry budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stateward
from stateward import Dag, Runtime
from stateward._protocol import messages as m
from stateward._records import AttemptRecord


def pipeline(executed: list[str], broken: dict[str, bool]) -> Dag:
    """extract >> transform (mapped 3 ways; index 1 fails while broken) >> load."""
    dag = Dag("pipe", default_args={"retries": 1, "retry_delay": 0})

    @dag.task
    def extract() -> int:
        executed.append("extract")
        return 7

    @dag.task
    def transform(i: int) -> int:
        executed.append(f"transform[{i}]")
        if i == 1 and broken["on"]:
            raise RuntimeError("shard 1 is broken")
        return i * 10

    @dag.task
    def load() -> str:
        executed.append("load")
        return "done"

    extract >> transform.expand(i=[0, 1, 2]) >> load
    return dag


async def test_resume_after_a_failure_reruns_only_what_did_not_succeed(rt: Runtime) -> None:
    """Succeeded instances are reported from their record and not executed again (counted
    outside the store); the failed one runs as try 3 after two tries, with a fresh
    retry budget; the upstream-failed one runs for the first time."""
    executed: list[str] = []
    broken = {"on": True}
    dag = pipeline(executed, broken)
    first = await rt.run_dag(dag, run_id="r")
    assert first.state == "failed"
    assert first.ti("transform", 1).try_number == 2
    assert first.ti("load").state == "upstream_failed"
    executed.clear()
    broken["on"] = False
    second = await rt.run_dag(dag, run_id="r")
    assert second.state == "success"
    assert sorted(executed) == ["load", "transform[1]"]
    extract = second.ti("extract")
    assert (extract.state, extract.try_number, extract.result) == ("success", 1, 7)
    assert (second.ti("transform", 2).try_number, second.ti("transform", 2).result) == (1, 20)
    assert (second.ti("transform", 1).try_number, second.ti("transform", 1).result) == (3, 10)
    assert (second.ti("load").try_number, second.ti("load").result) == (1, "done")
    record = await rt.runs.get("pipe", "r")
    assert record is not None
    assert record.state == "success"
    shard = next(ti for ti in record.instances if (ti.task_id, ti.map_index) == ("transform", 1))
    assert [(a.try_number, a.state) for a in shard.attempts] == [
        (1, "failed"), (2, "failed"), (3, "success"),
    ]  # fmt: skip


async def test_fresh_retry_budget_on_resume(rt: Runtime) -> None:
    """A resumed instance gets its retries again: tries 3 and 4 after 1 and 2."""
    executed: list[str] = []
    dag = pipeline(executed, {"on": True})
    await rt.run_dag(dag, run_id="r")
    again = await rt.run_dag(dag, run_id="r")
    assert again.state == "failed"
    assert again.ti("transform", 1).try_number == 4
    assert executed.count("transform[1]") == 4


async def test_resuming_a_run_that_succeeded_runs_and_writes_nothing(rt: Runtime) -> None:
    """A run that succeeded is a no-op resume: no task executes, the store is not
    written, and the result is the recorded one."""
    executed: list[str] = []
    dag = pipeline(executed, {"on": False})
    first = await rt.run_dag(dag, run_id="r")
    executed.clear()
    writes = rt.store.write_transactions
    again = await rt.run_dag(dag, run_id="r")
    assert executed == []
    assert rt.store.write_transactions == writes
    assert again.state == "success"
    assert [(t.task_id, t.map_index, t.try_number, t.result) for t in again.task_instances] == [
        (t.task_id, t.map_index, t.try_number, t.result) for t in first.task_instances
    ]


async def test_an_instance_left_running_is_abandoned_and_runs_as_the_next_try(
    rt: Runtime,
) -> None:
    """A `running` instance found at start (its runtime died) runs again as the next try;
    its last attempt is recorded `abandoned`."""
    executed: list[str] = []
    dag = pipeline(executed, {"on": False})
    left = AttemptRecord(1, "running", 1.0, host="gone", pid=1)
    await rt.admin.request(m.RecordDagRun("pipe", "r", "running", 1.0))
    await rt.admin.request(m.RecordTaskAttempt("pipe", "r", "extract", -1, "running", left))
    result = await rt.run_dag(dag, run_id="r")
    assert result.ti("extract").try_number == 2
    record = await rt.runs.get("pipe", "r")
    assert record is not None
    extract = next(ti for ti in record.instances if ti.task_id == "extract")
    assert [(a.try_number, a.state, a.host) for a in extract.attempts] == [
        (1, "abandoned", "gone"), (2, "success", record.instances[0].attempts[-1].host),
    ]  # fmt: skip


def test_module_level_run_dag_resumes(tmp_path: Path) -> None:
    """stateward.run_dag on the same database and run id resumes too."""
    executed: list[str] = []
    broken = {"on": True}
    dag = pipeline(executed, broken)
    db = tmp_path / "s.db"
    assert stateward.run_dag(dag, run_id="r", db=db).state == "failed"
    executed.clear()
    broken["on"] = False
    result: Any = stateward.run_dag(dag, run_id="r", db=db)
    assert (result.state, sorted(executed)) == ("success", ["load", "transform[1]"])
