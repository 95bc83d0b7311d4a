"""asset_state: keyed access, single-asset sugar, aliases, scope, provenance, every store."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stateward import (
    Asset,
    AssetAlias,
    AssetConflictError,
    Dag,
    MemoryStore,
    Operator,
    Runtime,
    StateTypeError,
    StateValueError,
    TaskInstanceResult,
    UndeclaredAssetError,
    open_runtime,
)
from stateward._protocol import messages as m
from stateward.store.base import Store

ORDERS = Asset("orders", uri="s3://lake/orders")
CUSTOMERS = Asset("customers", uri="s3://lake/customers")
DAILY = AssetAlias("daily-partitions")


def ok(result: TaskInstanceResult) -> Any:
    if result.error is not None:
        raise result.error
    return result.result


async def run_one(rt: Runtime, fn: Any, run_id: str = "r", **options: Any) -> TaskInstanceResult:
    dag = Dag("d")
    task = dag.task(**options)(fn)
    return await rt.run_task(task, run_id=run_id)


async def test_single_asset_sugar_reads_and_writes_through(rt: Runtime) -> None:
    """With one asset, asset_state.get/set/attribute access reach it directly."""

    def task(asset_state: Any) -> Any:
        asset_state.set("watermark", 10)
        return [
            asset_state.get("watermark"), asset_state.watermark, asset_state["orders"]["watermark"],
            asset_state.increment("runs"), len(asset_state), list(asset_state),
        ]  # fmt: skip

    assert ok(await run_one(rt, task, outlets=[ORDERS])) == [10, 10, 10, 1, 1, [ORDERS]]
    assert await rt.state.asset(ORDERS).aget("watermark") == 10


async def test_async_twins_on_asset_state(rt: Runtime) -> None:
    """Async tasks use the a-prefixed twins on asset state too."""

    async def task(asset_state: Any) -> Any:
        state = asset_state[ORDERS]
        await state.aset("k", [1])
        swapped = await state.acompare_and_set("k", [1], [2])
        return [
            await state.aget("k"),
            swapped,
            await state.aincrement("n", 3),
            await state.aitems(),
        ]

    assert ok(await run_one(rt, task, inlets=[ORDERS])) == [[2], True, 3, [("k", [2]), ("n", 3)]]


async def test_keyed_access_by_asset_refs_str_and_alias(rt: Runtime) -> None:
    """asset_state is keyed by Asset, Asset.ref(name|uri), a name, a URI, or an alias."""
    await rt.state.asset(ORDERS).aset("watermark", 7)

    def produce(outlet_events: Any) -> None:
        outlet_events[DAILY].add(ORDERS)

    await run_one(rt, produce, outlets=[DAILY])

    def consume(asset_state: Any) -> Any:
        keys = [
            ORDERS, Asset.ref(name="orders"), Asset.ref(uri="s3://lake/orders"), "orders",
            "s3://lake/orders", DAILY,
        ]  # fmt: skip
        return [asset_state[key].get("watermark") for key in keys] + [DAILY in asset_state]

    assert ok(await run_one(rt, consume, inlets=[ORDERS, DAILY])) == [7] * 6 + [True]


async def test_single_asset_sugar_means_the_single_inlet(rt: Runtime) -> None:
    """As in Airflow, asset_state.get(...) reads the one inlet, whatever the outlets."""

    def task(asset_state: Any) -> Any:
        asset_state.set("read", True)
        return asset_state.asset

    assert ok(await run_one(rt, task, inlets=[ORDERS], outlets=[CUSTOMERS])) == ORDERS
    assert await rt.state.asset(ORDERS).aget("read") is True
    assert await rt.state.asset(CUSTOMERS).aitems() == []


async def test_single_asset_sugar_through_an_alias_inlet(rt: Runtime) -> None:
    """An alias inlet resolving to one asset is the one inlet, beside an Asset outlet."""

    def produce(outlet_events: Any) -> None:
        outlet_events[DAILY].add(ORDERS)

    await run_one(rt, produce, outlets=[DAILY])

    def consume(asset_state: Any) -> Any:
        return asset_state.asset

    assert ok(await run_one(rt, consume, inlets=[DAILY], outlets=[CUSTOMERS])) == ORDERS


@pytest.mark.parametrize(
    ("options", "has"),
    [
        ({"inlets": [ORDERS, CUSTOMERS]}, "2 inlet assets ['orders', 'customers']"),
        ({"outlets": [ORDERS, CUSTOMERS]}, "no concrete inlet, and assets ['orders', 'customers']"),
    ],
)
async def test_without_single_asset_sugar_says_how_to_index(
    rt: Runtime, options: dict[str, Any], has: str
) -> None:
    """Two inlets, or no inlet and two outlets: asset_state.get is an AttributeError
    showing asset_state[...]."""

    def task(asset_state: Any) -> None:
        asset_state.get("watermark")

    result = await run_one(rt, task, **options)
    assert isinstance(result.error, AttributeError)
    assert str(result.error) == (
        "asset_state.get works only when the task has exactly one inlet asset (or no "
        f"inlets and one outlet); it has {has}. Index it instead: asset_state['orders'].get"
    )


async def test_probes_of_several_assets_behave_as_on_a_mapping(rt: Runtime) -> None:
    """hasattr(), dict(), getattr() with a default and dunders do not raise."""

    def task(asset_state: Any) -> Any:
        as_dict = dict(asset_state)
        return [
            hasattr(asset_state, "keys"), hasattr(asset_state, "get"),
            hasattr(asset_state, "__array__"), getattr(asset_state, "watermark", "none"),
            list(as_dict), as_dict[ORDERS].asset, asset_state.keys(),
        ]  # fmt: skip

    assert ok(await run_one(rt, task, inlets=[ORDERS, CUSTOMERS])) == [
        True, False, False, "none", [ORDERS, CUSTOMERS], ORDERS, [ORDERS, CUSTOMERS],
    ]  # fmt: skip


async def test_undeclared_asset_is_a_key_error_listing_the_declared(rt: Runtime) -> None:
    """An asset the task did not declare raises KeyError naming it and the declared ones."""

    def task(asset_state: Any) -> Any:
        return asset_state[CUSTOMERS]

    result = await run_one(rt, task, outlets=[ORDERS], inlets=[DAILY])
    assert isinstance(result.error, KeyError)
    assert isinstance(result.error, UndeclaredAssetError)
    assert str(result.error) == (
        "Asset('customers', uri='s3://lake/customers') is not an asset this task declared; "
        "it declared Asset('orders', uri='s3://lake/orders'), AssetAlias('daily-partitions'). "
        "Add it to the task's inlets or outlets"
    )


async def test_wrong_key_type_is_a_type_error(rt: Runtime) -> None:
    """Indexing asset_state with something that is not an asset key says what it takes."""

    def task(asset_state: Any) -> Any:
        return asset_state[3]

    result = await run_one(rt, task, outlets=[ORDERS])
    assert isinstance(result.error, TypeError)
    assert "asset_state is keyed by Asset, Asset.ref" in str(result.error)


async def test_asset_state_present_exactly_when_design_says(rt: Runtime) -> None:
    """Present with a concrete asset or an alias inlet; absent otherwise."""

    def has(**context: Any) -> Any:
        state = context.get("asset_state")
        return None if state is None else len(state)

    assert ok(await run_one(rt, has)) is None
    assert ok(await run_one(rt, has, outlets=[DAILY])) is None
    assert ok(await run_one(rt, has, inlets=[DAILY])) == 0
    assert ok(await run_one(rt, has, inlets=[ORDERS], outlets=[ORDERS])) == 1

    class Reads(Operator):
        def execute(self, context: Any) -> None:
            context["asset_state"]

    result = await rt.run_task(Reads(task_id="reads", dag=Dag("d2")), run_id="r")
    assert "asset_state is there only when the task declares an Asset" in str(result.error)


async def test_alias_producer_and_consumer(rt: Runtime) -> None:
    """produce emits through the alias; consume (alias inlet only) reaches the asset's state."""
    dag = Dag("alias_pair")

    @dag.task(outlets=[DAILY])
    def produce(outlet_events: Any) -> None:
        outlet_events[DAILY].add(ORDERS, extra={"partition": "2024-01-01"})

    @dag.task(inlets=[DAILY])
    def consume(asset_state: Any) -> Any:
        asset_state.set("watermark", "2024-01-01")
        return [asset_state.get("watermark"), [a.name for a in asset_state]]

    produce >> consume
    result = await rt.run_dag(dag, run_id="r")
    assert result.ti("consume").result == ["2024-01-01", ["orders"]]
    assert await rt.state.asset(name="orders").aget("watermark") == "2024-01-01"
    assert await rt.state.asset(uri="s3://lake/orders").aget("watermark") == "2024-01-01"


async def test_alias_events_are_recorded_with_their_emitter() -> None:
    """An asset event records the asset, extra, emitting task instance and time."""
    store = MemoryStore()
    async with open_runtime(store=store, wall_clock=lambda: 123.0) as rt:
        dag = Dag("ev")

        @dag.task(outlets=[DAILY, CUSTOMERS], retries=1)
        def produce(outlet_events: Any, ti: Any) -> None:
            outlet_events[DAILY].add(ORDERS, extra={"rows": 3})
            outlet_events[CUSTOMERS].extra["source"] = "crm"
            if ti.try_number == 1:
                raise RuntimeError("events of a failed try are not recorded")

        await rt.run_dag(dag, run_id="r")
    events = [(e.asset.name, e.extra, e.alias_name, e.writer, e.timestamp) for e in store.events]
    writer = events[0][3]
    assert writer is not None
    assert writer.label == "ev/r/produce try 2"
    assert events == [
        ("orders", '{"rows":3}', "daily-partitions", writer, 123.0),
        ("customers", '{"source":"crm"}', None, writer, 123.0),
    ]


async def test_asset_events_are_read_back_out_of_band() -> None:
    """rt.state.asset_events() lists an asset's events newest first with their emitter,
    by Asset, name or URI; an unknown asset has none."""
    clock = iter([100.0, 200.0])
    async with open_runtime(store=MemoryStore(), wall_clock=lambda: next(clock, 300.0)) as rt:
        dag = Dag("ev")

        @dag.task(outlets=[ORDERS])
        def produce(outlet_events: Any, params: Any) -> None:
            outlet_events[ORDERS].extra["n"] = params["n"]

        await rt.run_dag(dag, run_id="first", params={"n": 1})
        await rt.run_dag(dag, run_id="second", params={"n": 2})
        events = await rt.state.asset_events(ORDERS)
        assert [(e.run_id, e.task_id, e.try_number, e.extra) for e in events] == [
            ("second", "produce", 1, {"n": 2}),
            ("first", "produce", 1, {"n": 1}),
        ]
        assert events[0].asset_uri == ORDERS.uri
        assert await rt.state.asset_events(uri=ORDERS.uri, limit=1) == events[:1]
        assert await rt.state.asset_events("nobody") == []
        with pytest.raises(TypeError, match="needs an Asset"):
            await rt.state.asset_events()


async def test_outlet_events_misuse_is_clear(rt: Runtime) -> None:
    """add() on an Asset outlet, or an undeclared outlet, say what to do."""

    def task(outlet_events: Any) -> Any:
        errors = []
        for call in (
            lambda: outlet_events[ORDERS].add(ORDERS),
            lambda: outlet_events[CUSTOMERS],
            lambda: outlet_events[DAILY].add("orders"),
        ):
            try:
                call()
            except (TypeError, KeyError) as exc:
                errors.append(str(exc))
        return errors

    assert ok(await run_one(rt, task, outlets=[ORDERS, DAILY])) == [
        "add() emits through an AssetAlias outlet; Asset('orders', uri='s3://lake/orders') is "
        "an asset, so set outlet_events[asset].extra instead",
        "Asset('customers', uri='s3://lake/customers') is not an outlet of this task; its "
        "outlets: Asset('orders', uri='s3://lake/orders'), AssetAlias('daily-partitions')",
        "add() takes an Asset, got str 'orders'",
    ]


async def test_alias_resolving_to_several_assets_needs_a_concrete_key(rt: Runtime) -> None:
    """An alias key works only when it resolves to exactly one asset."""

    def produce(outlet_events: Any) -> None:
        outlet_events[DAILY].add(ORDERS)
        outlet_events[DAILY].add(CUSTOMERS)

    await run_one(rt, produce, outlets=[DAILY])

    def consume(asset_state: Any) -> Any:
        names = [a.name for a in asset_state]
        try:
            asset_state[DAILY]
        except KeyError as exc:
            return [names, str(exc)]
        return names

    names, error = ok(await run_one(rt, consume, inlets=[DAILY]))
    assert names == ["orders", "customers"]
    assert "AssetAlias('daily-partitions') resolves to 2 assets ['orders', 'customers']" in error


async def test_conflicting_declarations_fail_the_run_naming_both(rt: Runtime) -> None:
    """The same name with two URIs (across Dags) is refused at run time, naming both."""
    first = Dag("first")
    first.task(outlets=[Asset("a", uri="x")], task_id="t")(lambda: None)
    second = Dag("second")
    second.task(outlets=[Asset("a", uri="y")], task_id="t")(lambda: None)
    await rt.run_dag(first, run_id="r")
    with pytest.raises(AssetConflictError) as caught:
        await rt.run_dag(second, run_id="r")
    assert "Asset(name='a', uri='y')" in str(caught.value)
    assert "Asset(name='a', uri='x')" in str(caught.value)


async def test_asset_refs_resolve_to_registered_assets(rt: Runtime) -> None:
    """Asset.ref(name=...) in inlets reaches an asset declared elsewhere; unknown refs fail."""
    producer = Dag("producer")
    producer.task(outlets=[ORDERS], task_id="t")(lambda asset_state: asset_state.set("w", 1))
    await rt.run_dag(producer, run_id="r")

    def read(asset_state: Any) -> Any:
        return asset_state.get("w")

    assert ok(await run_one(rt, read, inlets=[Asset.ref(uri="s3://lake/orders")])) == 1
    with pytest.raises(
        UndeclaredAssetError,
        match=r"declares Asset.ref\(name='nowhere'\), but no such asset is known",
    ):
        await run_one(rt, read, inlets=[Asset.ref(name="nowhere")])


async def test_task_client_cannot_reach_undeclared_assets_even_by_hand(rt: Runtime) -> None:
    """A hand-built request through the task's own client is refused by the supervisor."""
    await rt.state.asset(CUSTOMERS).aset("secret", "s")

    async def task(asset_state: Any) -> Any:
        client = asset_state[ORDERS]._client
        try:
            await client.request(m.GetAssetStateByName("customers", "secret"))
        except UndeclaredAssetError as exc:
            return str(exc)
        return "leaked"

    error = ok(await run_one(rt, task, outlets=[ORDERS]))
    assert "did not declare the asset with name='customers'" in error


async def test_watermark_carried_across_runs_and_restarts(tmp_path: Path) -> None:
    """Three runs, two runtime restarts: each run continues from the last watermark."""
    dag = Dag("incremental")

    @dag.task(outlets=[ORDERS])
    def load(asset_state: Any) -> Any:
        watermark = asset_state.get("watermark", 0)
        asset_state.set("watermark", watermark + 5)
        return [watermark, asset_state.increment("runs")]

    seen = []
    for run in range(3):
        async with open_runtime(tmp_path / "state.db") as rt:
            seen.append((await rt.run_dag(dag, run_id=f"run-{run}")).ti("load").result)
    assert seen == [[0, 1], [5, 2], [10, 3]]


async def test_mapped_instances_increment_one_key_exactly(rt: Runtime) -> None:
    """8 mapped instances incrementing one asset key 25 times each end at exactly 200."""
    dag = Dag("counters", max_active_tasks=8)

    @dag.task(outlets=[ORDERS])
    def bump(i: int, asset_state: Any) -> None:
        for _ in range(25):
            asset_state.increment("count")

    bump.expand(i=list(range(8)))
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert await rt.state.asset(ORDERS).aget("count") == 200


async def test_provenance_records_the_writer_and_out_of_band_writes(rt: Runtime) -> None:
    """Each asset row says which task instance and try wrote it; rt.state writes say none."""
    dag = Dag("prov")

    @dag.task(outlets=[ORDERS], retries=1)
    def write(asset_state: Any, ti: Any) -> None:
        asset_state.set("by_task", ti.try_number)
        if ti.try_number == 1:
            raise RuntimeError("retry me")

    await rt.run_dag(dag, run_id="r1")
    await rt.state.asset(ORDERS).aset("by_admin", True)
    rows = {e.key: e for e in await rt.state.list(scope="asset")}
    assert rows["by_task"].writer == "prov/r1/write try 2"
    assert rows["by_admin"].writer is None
    assert (rows["by_task"].asset_name, rows["by_task"].asset_uri) == ("orders", "s3://lake/orders")


BAD = [
    (None, StateValueError, r"cannot store None"),
    (math.nan, StateValueError, r"JSON has no NaN"),
    ({"when": object()}, StateTypeError, r"value\['when'\] is a object"),
    ({1: 2}, StateTypeError, r"has a int key 1"),
    ("x" * 70000, StateValueError, r"over the limit of 65536"),
]


@pytest.mark.parametrize(("value", "kind", "match"), BAD)
async def test_bad_asset_values_are_refused_and_nothing_written(
    rt: Runtime, value: Any, kind: type[Exception], match: str
) -> None:
    """Asset state follows the same value rules as task state."""
    state = rt.state.asset(ORDERS)
    await state.aset("k", "before")
    with pytest.raises(kind, match=match):
        await state.aset("k", value)
    with pytest.raises(kind, match=match):
        await state.acompare_and_set("k", "before", value)
    assert await state.aget("k") == "before"


@pytest.mark.parametrize(
    ("key", "kind"), [("", StateValueError), (7, StateTypeError), ("k" * 513, StateValueError)]
)
async def test_bad_asset_keys_are_refused(rt: Runtime, key: Any, kind: type[Exception]) -> None:
    """Asset state follows the same key rules as task state."""
    state = rt.state.asset(ORDERS)
    for call in (state.aget, state.adelete, state.aincrement):
        with pytest.raises(kind):
            await call(key)
    with pytest.raises(kind):
        await state.aset(key, 1)
    assert await state.aitems() == []


async def test_clear_asset_state(rt: Runtime) -> None:
    """clear() empties one asset's state and no other's."""
    await rt.state.asset(ORDERS).aset("a", 1)
    await rt.state.asset(CUSTOMERS).aset("a", 1)
    await rt.state.asset(ORDERS).aclear()
    assert await rt.state.asset(ORDERS).aitems() == []
    assert await rt.state.asset(CUSTOMERS).aitems() == [("a", 1)]


async def test_out_of_band_asset_access_forms(make_store: Callable[[], Store]) -> None:
    """rt.state.asset takes an Asset, a name, name= or uri=."""
    async with open_runtime(store=make_store()) as rt:
        await rt.state.asset(ORDERS).aset("k", 1)
        assert await rt.state.asset("orders").aget("k") == 1
        assert await rt.state.asset(name="orders").aget("k") == 1
        assert await rt.state.asset(uri="s3://lake/orders").aget("k") == 1
        assert rt.state.asset(ORDERS).asset == ORDERS
        with pytest.raises(TypeError, match=r"needs an Asset, name= or uri="):
            rt.state.asset()


def test_asset_objects() -> None:
    """Asset fills a missing name or URI from the other; refs and aliases validate."""
    assert Asset("a") == Asset(name="a", uri="a")
    assert Asset(uri="s3://x").name == "s3://x"
    assert Asset.ref(name="a").name == "a"
    assert Asset.ref(uri="u").uri == "u"
    with pytest.raises(TypeError, match=r"needs a name or a uri"):
        Asset()
    with pytest.raises(TypeError, match=r"exactly one of name= or uri="):
        Asset.ref(name="a", uri="b")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"an asset name must be a non-empty str, got ''"):
        Asset("")
    with pytest.raises(ValueError, match=r"alias name must be a non-empty str"):
        AssetAlias("")
