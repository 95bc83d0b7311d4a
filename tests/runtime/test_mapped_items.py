"""Mapped task state follows its item, not its position (apache/airflow#72725)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stateward import Dag, DagDefinitionError, Runtime, open_runtime
from stateward._items import mapped_item
from stateward._loader import load_dags
from stateward._taskflow import TaskOutput


def storing_dag(items: list[Any], map_key: Any = None, name: str = "item") -> Dag:
    """Each instance stores its item; its first run fails, a resumed one returns what
    its state held."""
    dag = Dag("m")

    @dag.task
    def store(item: Any, task_state: Any) -> Any:
        seen = task_state.get(name)
        task_state.set(name, item)
        if seen is None:
            raise RuntimeError("the first run fails")
        return seen

    store.expand(item=items, map_key=map_key)
    return dag


def results(run: Any) -> list[tuple[int, Any, str]]:
    return [(ti.map_index, ti.result, str(ti.state)) for ti in run.task_instances]


async def test_a_resumed_run_with_a_changed_list_reads_each_items_own_state(rt: Runtime) -> None:
    """#72725: expanded over a, b, c, every instance stores its item and fails; resumed
    over c, a, "c" (now 0) and "a" (now 1) each read back their own item, and "b"'s
    state stays reachable out of band, listed with its label."""
    first = await rt.run_dag(storing_dag(["a", "b", "c"]), run_id="r")
    assert first.state == "failed"
    again = await rt.run_dag(storing_dag(["c", "a"]), run_id="r")
    assert results(again) == [(0, "c", "success"), (1, "a", "success")]
    assert await rt.state.task("m", "r", "store", arguments={"item": "b"}).aget("item") == "b"
    # By map index: the item that stands there in the latest expansion.
    assert await rt.state.task("m", "r", "store", 0).aget("item") == "c"
    listed = {(e.item, e.map_index, e.value) for e in await rt.state.list(dag_id="m")}
    assert listed == {('"c"', 0, "c"), ('"a"', 1, "a"), ('"b"', 1, "b")}
    at_one = await rt.state.list(dag_id="m", map_index=1)
    assert sorted(e.value for e in at_one) == ["a", "b"]
    assert await rt.runs.items("m", "r") == {("store", 0): '"c"', ("store", 1): '"a"'}


async def test_an_item_never_seen_starts_empty_and_clear_reaches_every_item(rt: Runtime) -> None:
    """A new item starts with no state; clear(all_map_indices=True) clears every item's
    state of the task in the run, vanished ones included."""
    await rt.run_dag(storing_dag(["a", "b"]), run_id="r")
    again = await rt.run_dag(storing_dag(["z", "a"]), run_id="r")
    assert results(again)[0] == (0, None, "failed")  # "z" saw nothing: it fails as new
    assert results(again)[1] == (1, "a", "success")
    await rt.state.task("m", "r", "store", 0).aclear(all_map_indices=True)
    assert await rt.state.list(dag_id="m") == []


async def test_a_key_function_names_items_whose_other_fields_change(rt: Runtime) -> None:
    """With expand(map_key=...), items are dicts identified by their "id": a resumed
    run whose rows changed in other fields still finds each row's state."""
    first = [{"id": "a", "at": 1}, {"id": "b", "at": 1}, {"id": "c", "at": 1}]
    await rt.run_dag(storing_dag(first, map_key=lambda kw: kw["item"]["id"]), run_id="r")
    moved = [{"id": "c", "at": 2}, {"id": "a", "at": 2}]
    again = await rt.run_dag(storing_dag(moved, map_key=lambda kw: kw["item"]["id"]), run_id="r")
    assert results(again) == [
        (0, {"id": "c", "at": 1}, "success"), (1, {"id": "a", "at": 1}, "success"),
    ]  # fmt: skip
    b = rt.state.task("m", "r", "store", map_key="b")
    assert await b.aget("item") == {"id": "b", "at": 1}
    labels = sorted(e.item or "" for e in await rt.state.list(dag_id="m"))
    assert labels == ["a", "b", "c"]


async def test_arguments_that_are_not_json_fall_back_to_position_logged_once(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a key function, items that are not JSON keep state by position, and the
    runtime says so once per task."""
    caplog.set_level(logging.WARNING, logger="stateward.runner")
    dag = Dag("m")

    @dag.task
    def count(item: Any, task_state: Any) -> Any:
        return task_state.increment("runs")

    count.expand(item=[{1, 2}, {3}])  # sets are not JSON
    first = await rt.run_dag(dag, run_id="r")
    assert [ti.result for ti in first.task_instances] == [1, 1]
    again = await rt.run_dag(dag, run_id="r2")
    assert [ti.result for ti in again.task_instances] == [1, 1]
    warned = [r for r in caplog.records if "not JSON" in r.getMessage()]
    assert len(warned) == 1
    assert "kept by position (map_index)" in warned[0].getMessage()
    listed = await rt.state.list(dag_id="m", run_id="r")
    assert [(e.map_index, e.item) for e in listed] == [(0, None), (1, None)]
    assert await rt.state.task("m", "r", "count", 1).aget("runs") == 1


def test_mapped_item_identity_is_the_canonical_json_of_the_arguments() -> None:
    """Equal JSON gives one identity whatever the key order; 1 and 1.0 and True differ;
    a key function's value names the item; its bad returns are refused."""
    a = mapped_item({"x": {"p": 1, "q": [1.5, "s"]}, "y": "b"})
    b = mapped_item({"y": "b", "x": {"q": [1.5, "s"], "p": 1}})
    assert a is not None
    assert a == b
    assert a.key.startswith("j:")
    assert a.label == '{"x":{"p":1,"q":[1.5,"s"]},"y":"b"}'
    identities = {mapped_item({"x": v}).key for v in (1, 1.0, True, "1")}  # type: ignore[union-attr]
    assert len(identities) == 4
    assert mapped_item({"x": object()}) is None
    named = mapped_item({"x": {"id": 7}}, lambda kw: kw["x"]["id"])
    assert named is not None
    assert (named.key, named.label) == ("k:7", "7")
    with pytest.raises(TypeError, match="map_key must return a str or an int"):
        mapped_item({"x": 1}, lambda kw: [kw["x"]])  # type: ignore[arg-type,return-value]
    dag = Dag("d")

    @dag.task
    def echo(x: Any) -> Any:
        return x

    with pytest.raises(DagDefinitionError, match="takes a function"):
        echo.expand(x=[1], map_key="id")  # type: ignore[arg-type]


DAG_FILE = """
from stateward import Dag

ITEMS = {items!r}

dag = Dag("m", default_args={{"isolation": "process"}})


@dag.task
def store(item, task_state):
    seen = task_state.get("item")
    task_state.set("item", item)
    if seen is None:
        raise RuntimeError("the first run fails")
    return seen


store.expand(item=ITEMS{key})
"""


@pytest.mark.parametrize("keyed", [False, True], ids=["json", "map_key"])
async def test_the_same_with_process_isolation(tmp_path: Path, keyed: bool) -> None:
    """The #72725 scenario with each instance in a task process (the parent binds the
    item), with JSON items and with a key function over dicts."""
    path = tmp_path / "mapped.py"

    def write(ids: list[str], at: int) -> Dag:
        items: list[Any] = [{"id": i, "at": at} for i in ids] if keyed else ids
        key = ', map_key=lambda kw: kw["item"]["id"]' if keyed else ""
        path.write_text(textwrap.dedent(DAG_FILE.format(items=items, key=key)))
        return load_dags(path)["m"]

    async with open_runtime(tmp_path / "s.db") as rt:
        assert (await rt.run_dag(write(["a", "b", "c"], 1), run_id="r")).state == "failed"
        again = await rt.run_dag(write(["c", "a"], 2), run_id="r")
        read = [ti.result for ti in again.task_instances]
        if keyed:
            assert read == [{"id": "c", "at": 1}, {"id": "a", "at": 1}]
            b = rt.state.task("m", "r", "store", map_key="b")
        else:
            assert read == ["c", "a"]
            b = rt.state.task("m", "r", "store", arguments={"item": "b"})
        assert (await b.aget("item")) in ("b", {"id": "b", "at": 1})


async def test_state_seeded_by_map_index_before_a_run_is_taken_by_the_item_there(
    rt: Runtime,
) -> None:
    """State written by map index before any expansion (a seed) goes to the item that
    first stands at that index, with its history."""
    await rt.state.task("m", "r", "store", 1).aset("item", "seeded")
    run = await rt.run_dag(storing_dag(["a", "b"]), run_id="r")
    assert results(run) == [(0, None, "failed"), (1, "seeded", "success")]
    b = rt.state.task("m", "r", "store", arguments={"item": "b"})
    assert [v.value for v in await b.ahistory("item")] == ["b", "seeded"]


async def test_a_run_clear_deletes_each_cleared_items_state_with_a_tombstone(
    rt: Runtime,
) -> None:
    """rt.clear of a mapped task deletes the state of the items at its indexes (not of
    positions), each key getting a tombstone in its history."""
    await rt.run_dag(storing_dag(["a", "b"]), run_id="r")
    assert await rt.clear("m", "r", ["store"]) == [("store", 0), ("store", 1)]
    assert await rt.state.list(dag_id="m") == []
    a = rt.state.task("m", "r", "store", arguments={"item": "a"})
    assert [v.deleted for v in await a.ahistory("item")] == [True, False]


async def test_the_same_when_the_list_comes_from_an_upstream_task(rt: Runtime) -> None:
    """Mapped over an upstream task's result (expanded when the Dag runs), a re-run
    upstream that returns c, a gives "c" and "a" their own state."""

    def dag_over(items: list[str]) -> Dag:
        dag = Dag("m")

        @dag.task
        def produce() -> list[str]:
            return items

        @dag.task
        def store(item: Any, task_state: Any) -> Any:
            seen = task_state.get("item")
            task_state.set("item", item)
            if seen is None:
                raise RuntimeError("the first run fails")
            return seen

        store.expand(item=TaskOutput(produce))  # as an airflow.sdk file's produce() does
        return dag

    await rt.run_dag(dag_over(["a", "b", "c"]), run_id="r")
    await rt.clear("m", "r", ["produce"])
    again = await rt.run_dag(dag_over(["c", "a"]), run_id="r")
    assert [(ti.map_index, ti.result) for ti in again.task_instances if ti.task_id == "store"][
        :2
    ] == [(0, "c"), (1, "a")]
    assert await rt.state.task("m", "r", "store", arguments={"item": "b"}).aget("item") == "b"
