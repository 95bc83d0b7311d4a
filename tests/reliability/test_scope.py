"""Scope: a task reaches only its own task state and its declared assets, whatever it sends,
and templates can neither write state nor reach Python internals."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stateward import (
    Asset,
    AssetAlias,
    Dag,
    MemoryStore,
    Runtime,
    StateScopeError,
    StatewardError,
    TemplateError,
    TemplateWriteError,
    UndeclaredAssetError,
    open_runtime,
)
from stateward._protocol import messages as m
from stateward._records import AssetInfo

ORDERS = Asset("orders", "s3://lake/orders")
SECRET = Asset("secret", "s3://vault/secret")
DAG_ID, RUN_ID = "etl", "r1"


@pytest.fixture
async def mem_rt() -> AsyncIterator[Runtime]:
    """A runtime on a MemoryStore (scope is the supervisor's, whatever the store)."""
    async with open_runtime(store=MemoryStore()) as runtime:
        yield runtime


async def seed(rt: Runtime) -> None:
    """Other tasks', runs', Dags' and assets' state that the attacker must not touch."""
    for dag_id, run_id, task_id, index in [
        (DAG_ID, RUN_ID, "victim", -1),
        (DAG_ID, "r0", "attacker", -1),
        (DAG_ID, "r0", "attacker", 0),
        ("other_dag", RUN_ID, "attacker", 0),
        (DAG_ID, RUN_ID, "attacker", 1),  # the attacker's own mapped sibling
    ]:
        await rt.state.task(dag_id, run_id, task_id, index).aset("k", f"{dag_id}/{run_id}/{index}")
    await rt.state.asset(SECRET).aset("password", "hunter2")
    await rt.state.asset(ORDERS).aset("watermark", 41)


async def everything(rt: Runtime) -> dict[tuple[Any, ...], Any]:
    """Every stored row, by where it lives."""
    return {
        (e.scope, e.dag_id, e.run_id, e.task_id, e.map_index, e.asset_name, e.key): e.value
        for e in await rt.state.list()
    }


# Each request a task might hand-build to reach what is not its own, and how it is refused.
FORBIDDEN: list[tuple[Any, type[Exception], str]] = [
    (
        m.GetAssetStateByName("secret", "password"),
        UndeclaredAssetError,
        "did not declare the asset",
    ),
    (
        m.GetAssetStateByUri("s3://vault/secret", "password"),
        UndeclaredAssetError,
        "did not declare",
    ),
    (m.SetAssetStateByName("secret", "password", "pwned"), UndeclaredAssetError, "did not declare"),
    (m.SetAssetStateByUri("s3://vault/secret", "p", "x"), UndeclaredAssetError, "did not declare"),
    (m.DeleteAssetStateByName("secret", "password"), UndeclaredAssetError, "did not declare"),
    (m.ClearAssetStateByUri("s3://vault/secret"), UndeclaredAssetError, "did not declare"),
    (m.IncrementAssetStateByName("secret", "n"), UndeclaredAssetError, "did not declare"),
    (
        m.CompareAndSetAssetStateByName("secret", "password", "hunter2", "x"),
        UndeclaredAssetError,
        "did not declare",
    ),
    (m.ListAssetStateByName("secret"), UndeclaredAssetError, "did not declare"),
    (
        m.GetAssetsByAlias("everything"),
        StateScopeError,
        r"did not declare AssetAlias\('everything'\) as an inlet",
    ),
    (
        m.AddAssetEvent("secret", "s3://vault/secret", {}, "mine"),
        StateScopeError,
        r"did not declare AssetAlias\('mine'\) as an outlet",
    ),
    (  # through its own inlet alias: would map "secret" to it, then grant it on resolving
        m.AddAssetEvent("secret", "s3://vault/secret", {}, "theirs"),
        StateScopeError,
        r"did not declare AssetAlias\('theirs'\) as an outlet",
    ),
    (
        m.AddAssetEvent("secret", "s3://vault/secret"),
        UndeclaredAssetError,
        r"did not declare Asset\('secret'",
    ),
    (
        m.AddAssetEvent("orders", "s3://vault/secret"),
        UndeclaredAssetError,
        r"did not declare Asset\('orders'",
    ),
    (m.ListState(), StateScopeError, "may not send ListState"),
    (m.ListState(scope="asset", asset_name="secret"), StateScopeError, "may not send ListState"),
    (m.CountState(m.ListState()), StateScopeError, "may not send CountState"),
    (m.CleanupExpired(), StateScopeError, "may not send CleanupExpired"),
    (
        m.DeclareAssets((AssetInfo("secret", "s3://other"),)),
        StateScopeError,
        "may not send DeclareAssets",
    ),
    (m.GetAssetByRef(name="secret"), StateScopeError, "may not send GetAssetByRef"),
]


#: What the attacker sends, in order: its own writes, every forbidden request, then a
#: clear of its whole mapped fleet (what ``all_map_indices`` is documented to reach).
ATTACK: list[Any] = [
    m.SetTaskState("k", "written by attacker"),
    m.IncrementTaskState("hits"),
    m.ListTaskState(),
    *(request for request, _, _ in FORBIDDEN),
    m.ClearTaskState(all_map_indices=True),
]


def attacker_dag(sync: bool, outcomes: dict[str, Any]) -> Dag:
    """A mapped task that grabs its client and sends hand-built requests."""
    dag = Dag(DAG_ID)

    if sync:

        @dag.task(outlets=[ORDERS], inlets=[AssetAlias("theirs")])
        def attacker(task_state: Any, lane: int) -> None:
            client = task_state._client
            for request in ATTACK:
                try:
                    outcomes[repr(request)] = client.request_sync(request)
                except Exception as exc:
                    outcomes[repr(request)] = exc

    else:

        @dag.task(outlets=[ORDERS], inlets=[AssetAlias("theirs")])
        async def attacker(task_state: Any, lane: int) -> None:
            client = task_state._client
            for request in ATTACK:
                try:
                    outcomes[repr(request)] = await client.request(request)
                except Exception as exc:
                    outcomes[repr(request)] = exc

    attacker.expand(lane=[0])
    return dag


@pytest.mark.parametrize("sync", [True, False], ids=["sync-task", "async-task"])
async def test_hand_built_requests_reach_only_the_senders_own_state(
    mem_rt: Runtime, sync: bool
) -> None:
    """A task's hand-built requests reach only its own instance, fleet and declared assets."""
    rt = mem_rt
    await seed(rt)
    before = await everything(rt)
    outcomes: dict[str, Any] = {}
    result = await rt.run_dag(attacker_dag(sync, outcomes), run_id=RUN_ID)
    assert result.state == "success", result.ti("attacker", 0).error
    for request, kind, message in FORBIDDEN:
        outcome = outcomes[repr(request)]
        assert isinstance(outcome, kind), (request, outcome)
        assert re.search(message, str(outcome)), (request, str(outcome))
        assert "task etl.attacker[0] (run 'r1')" in str(outcome)
    listed = outcomes[repr(m.ListTaskState())]
    assert listed.items == {"hits": 1, "k": "written by attacker"}
    after = await everything(rt)
    # Only the attacker's own fleet in this run changed: index 0 wrote, then cleared
    # itself and index 1; every other task, run, Dag and asset is as it was.
    gone = {key for key in before if key not in after}
    assert gone == {("task", DAG_ID, RUN_ID, "attacker", 1, None, "k")}
    assert after == {key: value for key, value in before.items() if key not in gone}
    assert await rt.state.asset(SECRET).aget("password") == "hunter2"


async def test_an_alias_outlet_emits_only_through_the_alias_declared(mem_rt: Runtime) -> None:
    """An alias consumer reads what was emitted to it but cannot emit through its inlet."""
    rt = mem_rt
    await seed(rt)
    dag = Dag(DAG_ID)

    @dag.task(outlets=[AssetAlias("daily")])
    def producer(outlet_events: Any) -> None:
        outlet_events[AssetAlias("daily")].add(ORDERS)

    @dag.task(inlets=[AssetAlias("daily")])
    async def consumer(asset_state: Any, task_state: Any) -> Any:
        client = task_state._client
        refused = ""
        try:
            await client.request(m.AddAssetEvent("secret", "s3://vault/secret", {}, "daily"))
        except StateScopeError as exc:
            refused = str(exc)
        return await asset_state.aget("watermark"), refused

    producer >> consumer
    result = await rt.run_dag(dag, run_id=RUN_ID)
    watermark, refused = result.ti("consumer").result
    assert watermark == 41
    assert "did not declare AssetAlias('daily') as an outlet" in refused
    assert isinstance(rt.store, MemoryStore)
    assert [(e.asset.name, e.alias_name) for e in rt.store.events] == [("orders", "daily")]
    assert await rt.state.asset(SECRET).aget("password") == "hunter2"


# -- templates ---------------------------------------------------------------------------

ESCAPES = [
    ("<< task_state.get.__globals__ >>", "__globals__"),
    ("<< task_state.get|attr('__globals__') >>", "__globals__"),
    ("<< cycler.__init__.__globals__ >>", "__init__"),
    ("<< joiner.__init__.__globals__ >>", "__init__"),
    ("<< namespace.__init__.__globals__ >>", "__init__"),
    ("<< lipsum.__globals__ >>", "__globals__"),
    ("<< lipsum.__globals__['os'] >>", "__globals__"),
    ("<< self.__init__ >>", "__init__"),
    ("<< self._TemplateReference__context >>", "_TemplateReference__context"),
    ("<< ''.__class__.__mro__[1].__subclasses__() >>", "__class__"),
    ("<% for c in ().__class__.__base__.__subclasses__() %><< c >><% endfor %>", "__class__"),
    ("<< task_state._template_keys >>", "_template_keys"),
    ("<< task_state._template_keys() >>", "_template_keys"),
    ("<< task_state._items >>", "_items"),
    ("<< task_state.items.__self__ >>", "__self__"),
    ("<< '{0.__class__}'.format(task_state) >>", "__class__"),
    ("<< '{0.get.__globals__}'.format(task_state) >>", "__globals__"),
    ("<< '{x._items}'.format_map({'x': task_state}) >>", "_items"),
    ("<< task_state|attr('__class__') >>", "__class__"),
    ("<< task_state|attr('_items') >>", "_items"),
    ("<< task_state['__class__'] >>", "__class__"),
    ("<< asset_state._members >>", "_members"),
    ("<< asset_state['orders']._items >>", "_items"),
    ("<< task.python_callable.__globals__ >>", "python_callable"),
    ("<< task.__dict__ >>", "__dict__"),
    ("<< dag.__class__ >>", "__class__"),
]

WRITES = [
    "<< task_state.set('k', 'from a template') >>",
    "<< task_state.aset('k', 'from a template') >>",
    "<< task_state.clear() >>",
    "<< task_state.increment('k') >>",
    "<< task_state.compare_and_set('k', 'v', 'from a template') >>",
    "<% set _ = task_state.delete('k') %>",
    "<< asset_state.set('watermark', 0) >>",
    "<< asset_state['orders'].clear() >>",
    "<< task_state.__setitem__('k', 'from a template') >>",
    "<< task_state.__delitem__('k') >>",
]


async def render_attempt(rt: Runtime, source: str, native: bool) -> Any:
    """Run one task whose op_kwarg is ``source``; return its TaskInstanceResult."""
    dag = Dag(DAG_ID, render_template_as_native_obj=native)

    @dag.task(op_kwargs={"value": source}, outlets=[ORDERS])
    def load(value: Any) -> Any:
        return value

    return await rt.run_task(load, run_id=RUN_ID)


@pytest.mark.parametrize("native", [False, True], ids=["str", "native"])
@pytest.mark.parametrize(("source", "attribute"), ESCAPES, ids=[s for s, _ in ESCAPES])
async def test_templates_cannot_reach_python_internals(
    mem_rt: Runtime, source: str, attribute: str, native: bool
) -> None:
    """Each known sandbox escape fails the render with a TemplateError naming it."""
    rt = mem_rt
    await rt.state.task(DAG_ID, RUN_ID, "load").aset("k", "v")
    ti = await render_attempt(rt, source, native)
    assert ti.state == "failed"
    assert ti.result is None
    assert isinstance(ti.error, TemplateError)
    assert f"reached something the sandbox refuses: access to attribute '{attribute}'" in str(
        ti.error
    )


@pytest.mark.parametrize("native", [False, True], ids=["str", "native"])
@pytest.mark.parametrize("source", WRITES)
async def test_templates_cannot_write_state(mem_rt: Runtime, source: str, native: bool) -> None:
    """A write from a template, by method, twin or dunder, fails the render; nothing changes."""
    rt = mem_rt
    await rt.state.task(DAG_ID, RUN_ID, "load").aset("k", "v")
    await rt.state.asset(ORDERS).aset("watermark", 41)
    ti = await render_attempt(rt, source, native)
    assert ti.state == "failed"
    assert isinstance(ti.error, TemplateWriteError | TemplateError)
    assert await rt.state.task(DAG_ID, RUN_ID, "load").aitems() == [("k", "v")]
    assert await rt.state.asset(ORDERS).aitems() == [("watermark", 41)]


@pytest.mark.parametrize("sync", [True, False], ids=["sync-task", "async-task"])
async def test_a_scope_refusal_is_not_swallowed_by_except_oserror(
    mem_rt: Runtime, sync: bool
) -> None:
    """A refusal passes through ``except OSError`` around I/O and fails the attempt."""
    dag = Dag(DAG_ID)

    if sync:

        @dag.task
        def lister(task_state: Any) -> str:
            try:
                task_state._client.request_sync(m.ListState())
            except OSError:
                return "swallowed as I/O"
            return "not refused"

    else:

        @dag.task
        async def lister(task_state: Any) -> str:
            try:
                await task_state._client.request(m.ListState())
            except OSError:
                return "swallowed as I/O"
            return "not refused"

    ti = (await mem_rt.run_dag(dag, run_id=RUN_ID)).ti("lister")
    assert ti.state == "failed", ti.result
    assert isinstance(ti.error, StateScopeError)
    assert isinstance(ti.error, StatewardError)
    assert not isinstance(ti.error, OSError)
    assert "may not send ListState" in str(ti.error)
