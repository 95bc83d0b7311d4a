"""History and rollback through the accessors: tasks read their own, only out of band
may roll back; every store."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from stateward import (
    Asset,
    Dag,
    Runtime,
    StateScopeError,
    StateValueError,
    StateVersion,
    TaskInstanceResult,
    UndeclaredAssetError,
    open_runtime,
)

ORDERS = Asset("orders", uri="s3://lake/orders")
OTHER = Asset("other", uri="s3://lake/other")


def ok(result: TaskInstanceResult) -> Any:
    if result.error is not None:
        raise result.error
    return result.result


async def test_a_task_reads_its_own_history_with_its_provenance(rt: Runtime) -> None:
    """Each try's writes are versions naming the try and the host; a sync task reads
    them newest first, an async one through ahistory."""
    dag = Dag("d")

    @dag.task(retries=1, inlets=[ORDERS])
    def flaky(task_state: Any, asset_state: Any, ti: Any) -> Any:
        task_state.increment("tries")
        asset_state.set("w", ti.try_number)
        if ti.try_number == 1:
            raise RuntimeError("first try fails")
        return [(v.version, v.value, v.updated_by.try_number) for v in task_state.history("tries")]

    assert ok(await rt.run_task(flaky, run_id="r")) == [(2, 2, 2), (1, 1, 1)]
    [newest, _] = await rt.state.asset(ORDERS).ahistory("w")
    assert isinstance(newest, StateVersion)
    writer = newest.updated_by
    assert (writer.kind, writer.dag_id, writer.run_id, writer.task_id) == (
        "task",
        "d",
        "r",
        "flaky",
    )
    assert (writer.map_index, writer.try_number, writer.host) == (-1, 2, socket.gethostname())
    assert writer.label == f"d/r/flaky try 2 on {socket.gethostname()}"

    @dag.task
    async def reader(task_state: Any) -> Any:
        await task_state.aset("k", "v")
        return [v.value for v in await task_state.ahistory("k")]

    assert ok(await rt.run_task(reader, run_id="r")) == ["v"]


async def test_a_task_cannot_read_another_scopes_history(rt: Runtime) -> None:
    """History follows scope: an undeclared asset is refused, and a task's own
    accessor reaches no other instance."""
    await rt.state.asset(OTHER).aset("w", 1)
    await rt.state.task("d", "r", "elsewhere").aset("k", 1)
    dag = Dag("d")

    @dag.task(inlets=[ORDERS])
    def peek(task_state: Any, asset_state: Any) -> Any:
        try:
            asset_state[OTHER].history("w")
        except KeyError as exc:
            return [str(exc), task_state.history("k")]
        return None

    refused, own = ok(await rt.run_task(peek, run_id="r"))
    assert "other" in refused
    assert own == []  # its own (empty) history, not 'elsewhere''s
    # A hand-built request for an undeclared asset is refused by the supervisor too.
    from stateward._protocol import messages as m

    @dag.task(inlets=[ORDERS])
    async def forged(task_state: Any) -> Any:
        return await task_state._client.request(m.GetAssetStateHistoryByName("other", "w"))

    with pytest.raises(UndeclaredAssetError):
        ok(await rt.run_task(forged, run_id="r"))


@pytest.mark.parametrize("kind", ["task", "asset"])
async def test_a_task_cannot_roll_back(rt: Runtime, kind: str) -> None:
    """rollback from a task is refused with StateScopeError; nothing is written."""
    await rt.state.task("d", "r", "t").aset("k", 1)
    await rt.state.task("d", "r", "t").aset("k", 2)
    await rt.state.asset(ORDERS).aset("k", 1)
    await rt.state.asset(ORDERS).aset("k", 2)
    dag = Dag("d")

    @dag.task(task_id="t", inlets=[ORDERS])
    def roll(task_state: Any, asset_state: Any) -> Any:
        (task_state if kind == "task" else asset_state).rollback("k", 1)

    with pytest.raises(StateScopeError, match=r"may not send Rollback.*out-of-band"):
        ok(await rt.run_task(roll, run_id="r"))
    assert await rt.state.task("d", "r", "t").aget("k") == 2
    assert await rt.state.asset(ORDERS).aget("k") == 2


async def test_out_of_band_rollback_and_unknown_version(rt: Runtime) -> None:
    """Out of band, rollback restores a value or removes the key, as a version that
    names the rollback and the out-of-band writer; an unknown version is refused."""
    state = rt.state.task("d", "r", "t")
    await state.aset("k", "good")
    await state.aset("k", "bad")
    await state.adelete("k")
    await state.arollback("k", 1)
    assert await state.aget("k") == "good"
    newest = (await state.ahistory("k"))[0]
    assert (newest.version, newest.updated_by.kind, newest.updated_by.rollback_to) == (4, "api", 1)
    await state.arollback("k", 3)
    assert await state.aget("k") is None
    with pytest.raises(
        StateValueError, match="has no version 9: its history holds versions 1 to 5"
    ):
        await state.arollback("k", 9)


async def test_history_setting_bounds_versions_and_test_writer() -> None:
    """open_runtime(history=N) keeps N versions per key; 0 keeps none;
    out_of_band_writer names the writer of rt.state changes."""
    async with open_runtime(":memory:", history=2, out_of_band_writer="test") as rt:
        state = rt.state.task("d", "r", "t")
        for n in range(5):
            await state.aset("k", n)
        history = await state.ahistory("k")
        assert [(v.version, v.value) for v in history] == [(5, 4), (4, 3)]
        assert history[0].updated_by.kind == "test"
    async with open_runtime(":memory:", history=0) as rt:
        await rt.state.task("d", "r", "t").aset("k", 1)
        assert await rt.state.task("d", "r", "t").ahistory("k") == []
    with pytest.raises(ValueError, match="history must be an int >= 0"):
        async with open_runtime(":memory:", history=-1):
            pass
    with pytest.raises(ValueError, match="out_of_band_writer must be one of"):
        async with open_runtime(":memory:", out_of_band_writer="me"):
            pass


async def test_the_test_harness_is_named_as_the_writer(sw_runtime: Runtime) -> None:
    """What a test seeds through the plugin's runtime is written by kind "test"."""
    state = sw_runtime.state.task("d", "r", "t")
    await state.aset("k", 1)
    assert [v.updated_by.kind for v in await state.ahistory("k")] == ["test"]
