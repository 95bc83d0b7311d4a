"""One behaviour suite for every Store: the MemoryStore must act as SQLite does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stateward import AssetConflictError, StateTypeError, StateValueError
from stateward._records import AssetEvent, AssetInfo
from stateward.store import base as ops
from stateward.store.base import AssetScope, Store, TaskScope, Writer

T1 = TaskScope("d", "r1", "t", -1)
T1_RUN2 = TaskScope("d", "r2", "t", -1)
M0, M1 = TaskScope("d", "r1", "m", 0), TaskScope("d", "r1", "m", 1)
ORDERS = AssetInfo("orders", "s3://bucket/orders")
A = AssetScope(ORDERS.name, ORDERS.uri)
W = Writer("d", "r1", "t", -1, 2)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store of each kind."""
    async with make_store() as opened:
        yield opened


async def run(store: Store, *batch: ops.Op, now: float = 100.0) -> list[Any]:
    return await store.execute(list(batch), now=now)


async def one(store: Store, op: ops.Op, now: float = 100.0) -> Any:
    (result,) = await run(store, op, now=now)
    return result


def put(scope: ops.Scope, key: str, text: str, expires: float | None = None) -> ops.Put:
    return ops.Put(scope, key, text, expires, W)


async def test_get_of_absent_key_is_none(store: Store) -> None:
    """An absent key reads as None."""
    assert await one(store, ops.Get(T1, "nope")) is None


async def test_put_then_get_decodes_json(store: Store) -> None:
    """A value is stored as JSON text and read back decoded."""
    await one(store, put(T1, "k", '{"a":[1,2.5,true]}'))
    assert await one(store, ops.Get(T1, "k")) == {"a": [1, 2.5, True]}


async def test_put_overwrites(store: Store) -> None:
    """A second put replaces the value."""
    await run(store, put(T1, "k", "1"), put(T1, "k", "2"))
    assert await one(store, ops.Get(T1, "k")) == 2


async def test_scopes_are_separate(store: Store) -> None:
    """Runs, map indices and assets do not share keys."""
    await run(store, put(T1, "k", "1"), put(M0, "k", "2"), put(A, "k", "3"))
    assert await run(store, ops.Get(T1_RUN2, "k"), ops.Get(M1, "k"), ops.Get(M0, "k")) == [
        None,
        None,
        2,
    ]
    assert await one(store, ops.Get(A, "k")) == 3


async def test_items_lists_live_keys(store: Store) -> None:
    """Items returns every live key of one scope."""
    await run(store, put(T1, "a", "1"), put(T1, "b", '"x"'), put(T1, "gone", "0", expires=50.0))
    assert await one(store, ops.Items(T1)) == {"a": 1, "b": "x"}
    assert await one(store, ops.Items(T1_RUN2)) == {}


async def test_delete_reports_whether_a_live_key_was_there(store: Store) -> None:
    """Delete removes the key and says whether it existed."""
    await one(store, put(T1, "k", "1"))
    assert await run(store, ops.Delete(T1, "k"), ops.Delete(T1, "k")) == [True, False]
    assert await one(store, ops.Get(T1, "k")) is None


async def test_clear_one_instance_or_the_fleet(store: Store) -> None:
    """Clear empties one map index; all_map_indices empties every index of the task."""
    await run(store, put(M0, "k", "1"), put(M1, "k", "2"), put(T1, "k", "3"))
    assert await one(store, ops.Clear(M0)) == 1
    assert await run(store, ops.Get(M0, "k"), ops.Get(M1, "k")) == [None, 2]
    await one(store, put(M0, "k", "1"))
    assert await one(store, ops.Clear(M1, all_map_indices=True)) == 2
    assert await run(store, ops.Get(M0, "k"), ops.Get(M1, "k"), ops.Get(T1, "k")) == [
        None,
        None,
        3,
    ]


async def test_expired_key_reads_as_absent(store: Store) -> None:
    """A key is live until its expiry and absent from then on."""
    await one(store, put(T1, "k", "1", expires=200.0))
    assert await one(store, ops.Get(T1, "k"), now=199.9) == 1
    assert await one(store, ops.Get(T1, "k"), now=200.0) is None
    assert await one(store, ops.Items(T1), now=300.0) == {}


async def test_increment_counts_from_zero_and_from_expired(store: Store) -> None:
    """Increment treats absent and expired keys as 0."""
    assert await run(store, *[ops.Increment(T1, "n", 2, None, W)] * 3) == [2, 4, 6]
    await one(store, put(T1, "e", "10", expires=50.0))
    assert await one(store, ops.Increment(T1, "e", 1, None, W)) == 1


async def test_increment_of_non_int_is_refused_and_writes_nothing(store: Store) -> None:
    """Incrementing a float, bool or str fails for that op only."""
    await run(store, put(T1, "f", "1.5"), put(T1, "b", "true"))
    results = await run(
        store,
        ops.Increment(T1, "f", 1, None, W),
        put(T1, "ok", "1"),
        ops.Increment(T1, "b", 1, None, W),
    )
    assert isinstance(results[0], StateTypeError)
    assert "cannot increment key 'f': it holds float 1.5, not an int" in str(results[0])
    assert isinstance(results[2], StateTypeError)
    assert await run(store, ops.Get(T1, "f"), ops.Get(T1, "ok"), ops.Get(T1, "b")) == [1.5, 1, True]


@pytest.mark.parametrize(
    ("stored", "expected", "swaps"),
    [
        (None, None, True),
        ("1", None, False),
        (None, 1, False),
        ("1", 1, True),
        ("1", 1.0, False),
        ("1", True, False),
        ("true", 1, False),
        ('{"a":[1,2]}', {"a": [1, 2]}, True),
        ('{"a":[1,2]}', {"a": [2, 1]}, False),
    ],
)
async def test_compare_and_set_compares_json_exactly(
    store: Store, stored: str | None, expected: Any, swaps: bool
) -> None:
    """CAS swaps only when the stored value equals expected as JSON (None: absent)."""
    if stored is not None:
        await one(store, put(T1, "k", stored))
    assert await one(store, ops.CompareAndSet(T1, "k", expected, '"new"', None, W)) is swaps
    current = await one(store, ops.Get(T1, "k"))
    assert (current == "new") is swaps


async def test_assets_register_once_and_conflicts_are_refused(store: Store) -> None:
    """A name or URI bound to another asset is a conflict naming both."""
    assert await one(store, ops.RegisterAssets((ORDERS, ORDERS))) is None
    clash = await one(store, ops.RegisterAssets((AssetInfo("orders", "s3://other"),)))
    assert isinstance(clash, AssetConflictError)
    assert "Asset(name='orders', uri='s3://other')" in str(clash)
    assert "Asset(name='orders', uri='s3://bucket/orders')" in str(clash)
    clash = await one(store, ops.RegisterAssets((AssetInfo("other", ORDERS.uri),)))
    assert isinstance(clash, AssetConflictError)
    assert await one(store, ops.LookupAsset(uri=ORDERS.uri)) == ORDERS
    assert await one(store, ops.LookupAsset(name="other")) is None


async def test_asset_state_by_name_or_uri_is_one_namespace(store: Store) -> None:
    """An asset's state is the same whether it is addressed by name or by URI."""
    await one(store, ops.RegisterAssets((ORDERS,)))
    await one(store, put(AssetScope(name="orders"), "w", "5"))
    assert await one(store, ops.Get(AssetScope(uri=ORDERS.uri), "w")) == 5


async def test_unknown_asset_reads_empty_and_registers_on_write(store: Store) -> None:
    """Reading an unknown asset gives nothing; writing registers it (uri = name)."""
    assert await one(store, ops.Get(AssetScope(name="new"), "k")) is None
    assert await one(store, ops.Items(AssetScope(name="new"))) == {}
    await one(store, put(AssetScope(name="new"), "k", "1"))
    assert await one(store, ops.LookupAsset(name="new")) == AssetInfo("new", "new")


async def test_a_one_sided_reference_binds_nothing_else(store: Store) -> None:
    """A write by name only reads as uri = name but binds no URI (nor the reverse)."""
    await run(
        store, put(AssetScope(name="by-name"), "k", "1"), put(AssetScope(uri="s3://u"), "k", "2")
    )
    assert await one(store, ops.LookupAsset(uri="by-name")) is None
    assert await one(store, ops.LookupAsset(name="s3://u")) is None
    assert await one(store, ops.LookupAsset(uri="s3://u")) == AssetInfo("s3://u", "s3://u")


@pytest.mark.parametrize(
    "seed", [AssetScope(name=ORDERS.name), AssetScope(uri=ORDERS.uri)], ids=["name", "uri"]
)
async def test_the_first_declaration_completes_a_one_sided_asset(
    store: Store, seed: AssetScope
) -> None:
    """State written by name only (or URI only) belongs to the asset declared later
    with that name and a URI (or that URI and a name); its state is kept."""
    await one(store, put(seed, "watermark", '"w0"'))
    assert await one(store, ops.RegisterAssets((ORDERS,))) is None
    assert await one(store, ops.LookupAsset(name=ORDERS.name)) == ORDERS
    assert await one(store, ops.LookupAsset(uri=ORDERS.uri)) == ORDERS
    assert await one(store, ops.Get(A, "watermark")) == "w0"
    (entry,) = await one(store, ops.ListEntries(scope="asset"))
    assert (entry.asset_name, entry.asset_uri, entry.value) == (ORDERS.name, ORDERS.uri, "w0")
    clash = await one(store, ops.RegisterAssets((AssetInfo(ORDERS.name, "s3://other"),)))
    assert isinstance(clash, AssetConflictError)


async def test_an_event_completes_a_one_sided_asset(store: Store) -> None:
    """An asset event of a declared asset completes an asset written by name only."""
    await one(store, put(AssetScope(name=ORDERS.name), "k", "1"))
    await one(store, ops.AddEvent(ORDERS, "{}", "daily", W))
    assert await one(store, ops.ResolveAlias("daily")) == (ORDERS,)
    assert await one(store, ops.Get(AssetScope(uri=ORDERS.uri), "k")) == 1


async def test_a_declaration_joining_two_one_sided_assets_is_refused(store: Store) -> None:
    """A name used alone and a URI used alone, each with state, cannot become one asset."""
    await run(
        store,
        put(AssetScope(name=ORDERS.name), "k", "1"),
        put(AssetScope(uri=ORDERS.uri), "k", "2"),
    )
    clash = await one(store, ops.RegisterAssets((ORDERS,)))
    assert isinstance(clash, AssetConflictError)
    assert "joins two assets that were used apart" in str(clash)
    assert await one(store, ops.LookupAsset(uri=ORDERS.name)) is None


async def test_alias_events_record_the_mapping(store: Store) -> None:
    """An event through an alias maps the alias to the asset, once, oldest first."""
    other = AssetInfo("other", "file:///other")
    await run(
        store,
        ops.AddEvent(ORDERS, "{}", "daily", W),
        ops.AddEvent(other, '{"n":1}', "daily", W),
        ops.AddEvent(ORDERS, "{}", "daily", W),
        ops.AddEvent(ORDERS, "{}", None, None),
    )
    assert await one(store, ops.ResolveAlias("daily")) == (ORDERS, other)
    assert await one(store, ops.ResolveAlias("never")) == ()


async def test_asset_events_are_listed_newest_first_with_their_emitter(store: Store) -> None:
    """ListAssetEvents gives an asset's events newest first, at most ``limit``, with the
    try that emitted each (none out of band); by name or URI; unknown assets have none."""
    other = AssetInfo("other", "file:///other")
    await run(store, ops.AddEvent(ORDERS, '{"n":1}', None, W), now=100.0)
    await run(store, ops.AddEvent(other, "{}", None, W), now=150.0)
    await run(store, ops.AddEvent(ORDERS, '{"n":2}', "daily", None), now=200.0)
    newest, oldest = await one(store, ops.ListAssetEvents(AssetScope(name="orders")))
    assert newest == AssetEvent(
        asset_name="orders", asset_uri=ORDERS.uri, timestamp=200.0, extra={"n": 2},
        alias_name="daily",
    )  # fmt: skip
    assert oldest == AssetEvent(
        asset_name="orders", asset_uri=ORDERS.uri, timestamp=100.0, extra={"n": 1},
        dag_id="d", run_id="r1", task_id="t", map_index=-1, try_number=2,
    )  # fmt: skip
    by_uri = await one(store, ops.ListAssetEvents(AssetScope(uri=ORDERS.uri), limit=1))
    assert by_uri == (newest,)
    assert await one(store, ops.ListAssetEvents(AssetScope(name="nobody"))) == ()
    assert ops.is_write(ops.ListAssetEvents(A)) is False


async def test_list_entries_with_provenance_and_filters(store: Store) -> None:
    """ListEntries gives rows with writer labels; out-of-band writes have none."""
    await run(
        store,
        put(T1, "k", "1"),
        ops.Put(M0, "k", "2", None, None),
        ops.RegisterAssets((ORDERS,)),
        put(A, "w", "3"),
        put(T1, "old", "0", expires=50.0),
    )
    entries = await one(store, ops.ListEntries())
    assert [(e.scope, e.task_id or e.asset_name, e.map_index, e.key) for e in entries] == [
        ("task", "m", 0, "k"),
        ("task", "t", -1, "k"),
        ("asset", "orders", None, "w"),
    ]
    assert entries[0].writer is None
    assert entries[1].writer == "d/r1/t try 2"
    assert entries[2].writer == "d/r1/t try 2"
    assert entries[2].asset_uri == ORDERS.uri
    assert entries[1].updated_at == 100.0
    only_task = await one(store, ops.ListEntries(task_id="t", include_expired=True))
    assert [e.key for e in only_task] == ["k", "old"]
    only_asset = await one(store, ops.ListEntries(asset_name="orders"))
    assert [e.key for e in only_asset] == ["w"]
    assert await one(store, ops.ListEntries(scope="asset", dag_id="d")) == ()


async def test_list_entries_reads_one_key_or_one_page_and_counts(store: Store) -> None:
    """ListEntries with ``key`` lists that key only; ``limit``/``offset`` one page in the
    listing's order (an item's rows where the item stands now); CountEntries counts
    what the filters list, live rows only unless asked."""
    keys = [f"k{i:02}" for i in range(12)]
    await run(
        store,
        *(put(T1, k, str(i)) for i, k in enumerate(keys)),
        put(T1, "gone", "0", expires=50.0),
        put(M0, "m0", "1"),
        put(M1, "m1", "1"),
        ops.RegisterAssets((ORDERS,)),
        *(put(A, k, "1") for k in keys[:5]),
    )
    task = {"scope": "task", "dag_id": "d", "run_id": "r1", "task_id": "t", "map_index": -1}
    (entry,) = await one(store, ops.ListEntries(**task, key="k03"))
    assert (entry.key, entry.value, entry.updated_at) == ("k03", 3, 100.0)
    assert await one(store, ops.ListEntries(**task, key="gone")) == ()
    assert len(await one(store, ops.ListEntries(**task, key="gone", include_expired=True))) == 1
    page = await one(store, ops.ListEntries(**task, limit=5, offset=10))
    assert [e.key for e in page] == ["k10", "k11"]
    page = await one(store, ops.ListEntries(**task, limit=3, offset=2))
    assert [e.key for e in page] == ["k02", "k03", "k04"]
    assert await one(store, ops.CountEntries(ops.ListEntries(**task, limit=1))) == 12
    expired = ops.ListEntries(**task, include_expired=True)
    assert await one(store, ops.CountEntries(expired)) == 13
    # M1's item moves to index 0 (M0's to 1): map index filters follow the items.
    await run(
        store,
        ops.RecordItem("d", "r1", "m", 0, "#1", "b"),
        ops.RecordItem("d", "r1", "m", 1, "#0", "a"),
    )
    mapped = {"scope": "task", "dag_id": "d", "run_id": "r1", "task_id": "m"}
    assert [e.key for e in await one(store, ops.ListEntries(**mapped, map_index=0))] == ["m1"]
    assert await one(store, ops.ListEntries(**mapped, map_index=1, key="m1")) == ()
    assert await one(store, ops.CountEntries(ops.ListEntries(**mapped, map_index=1))) == 1
    assets = {"scope": "asset", "asset_name": ORDERS.name}
    page = await one(store, ops.ListEntries(**assets, limit=2, offset=3))
    assert [e.key for e in page] == ["k03", "k04"]
    assert [e.key for e in await one(store, ops.ListEntries(**assets, key="k01"))] == ["k01"]
    assert await one(store, ops.CountEntries(ops.ListEntries(**assets))) == 5
    assert ops.is_write(ops.CountEntries(ops.ListEntries())) is False
    with pytest.raises(ValueError, match="needs scope"):
        ops.ListEntries(limit=1)


async def test_cleanup_counts_and_deletes_expired_rows(store: Store) -> None:
    """Cleanup deletes expired rows; a dry run only counts them."""
    await run(
        store,
        put(T1, "a", "1", expires=50.0),
        put(T1, "b", "1", expires=500.0),
        put(A, "c", "1", expires=60.0),
    )
    assert await one(store, ops.Cleanup(dry_run=True)) == 2
    assert await one(store, ops.Cleanup()) == 2
    assert await one(store, ops.Cleanup()) == 0
    assert await one(store, ops.ListEntries(include_expired=True)) != ()


async def test_write_batches_count_one_transaction_each(store: Store) -> None:
    """A batch with writes is one transaction; a read-only batch is none."""
    before = store.write_transactions
    await run(store, put(T1, "a", "1"), put(T1, "b", "2"), ops.Get(T1, "a"))
    await run(store, ops.Get(T1, "a"))
    assert store.write_transactions == before + 1


async def test_reads_in_a_batch_see_earlier_writes(store: Store) -> None:
    """Operations in one batch apply in order."""
    results = await run(
        store, put(T1, "k", "1"), ops.Get(T1, "k"), ops.Delete(T1, "k"), ops.Get(T1, "k")
    )
    assert results == [None, 1, True, None]


async def test_refused_registration_registers_nothing(store: Store) -> None:
    """A RegisterAssets with one clashing asset writes none of its assets."""
    await one(store, ops.RegisterAssets((ORDERS,)))
    fresh = AssetInfo("fresh", "s3://fresh")
    clash = await one(store, ops.RegisterAssets((fresh, AssetInfo("orders", "s3://other"))))
    assert isinstance(clash, AssetConflictError)
    assert await one(store, ops.LookupAsset(name="fresh")) is None


async def test_declarations_clashing_among_themselves_register_nothing(store: Store) -> None:
    """One RegisterAssets naming an asset twice with two URIs is refused whole."""
    result = await one(
        store,
        ops.RegisterAssets((AssetInfo("twice", "s3://one"), AssetInfo("twice", "s3://two"))),
    )
    assert isinstance(result, AssetConflictError)
    assert await one(store, ops.LookupAsset(name="twice")) is None


async def test_alias_order_is_emission_order_whatever_the_clocks(store: Store) -> None:
    """Assets resolve in the order they were emitted, even if a later emitter's clock is behind."""
    b, a = AssetInfo("b", "s3://b"), AssetInfo("a", "s3://a")
    await run(store, ops.AddEvent(b, "{}", "al", W), now=200.0)
    await run(store, ops.AddEvent(a, "{}", "al", W), now=100.0)
    assert await one(store, ops.ResolveAlias("al")) == (b, a)


async def test_reads_and_refused_writes_do_not_register_an_asset(store: Store) -> None:
    """Delete, and a compare-and-set that does not swap, leave an unknown asset unknown."""
    ghost = AssetScope(name="ghost")
    await run(store, ops.Delete(ghost, "k"), ops.CompareAndSet(ghost, "k", "x", '"y"', None, W))
    assert await one(store, ops.LookupAsset(name="ghost")) is None


async def test_compare_and_set_with_a_nul_in_the_expected_string(store: Store) -> None:
    """A value holding U+0000 is storable as JSON, so it can be compared against too."""
    await one(store, put(T1, "k", '"a\\u0000b"'))
    assert await one(store, ops.CompareAndSet(T1, "k", "a\x00b", '"new"', None, W)) is True
    assert await one(store, ops.Get(T1, "k")) == "new"


async def test_a_stored_value_that_cannot_be_read_fails_only_its_own_reads(store: Store) -> None:
    """A value stored elsewhere that this interpreter cannot read (an int past 4,300
    digits): reading its key is refused naming the key, an increment of it is refused,
    and listings show a marker for that row only."""
    if type(store).__name__ == "PostgresStore":
        pytest.skip("it digests what it stores: test_pg_faults seeds such a row with SQL")
    huge = "1" * 4301
    await run(store, put(T1, "big", huge), put(T1, "ok", "1"), put(A, "big", huge))
    got, inc = await run(store, ops.Get(T1, "big"), ops.Increment(T1, "big", 1, None, None))
    assert isinstance(got, StateValueError)
    assert str(got).startswith("the value stored under key 'big' cannot be read (Exceeds")
    assert isinstance(inc, StateValueError)
    marker = "<unreadable: Exceeds the limit (4300 digits) for integer string conversion>"
    items, entries = await run(store, ops.Items(T1), ops.ListEntries())
    assert items == {"big": marker, "ok": 1}
    assert [(e.key, e.value) for e in entries] == [("big", marker), ("ok", 1), ("big", marker)]


async def test_an_increment_result_past_4300_digits_writes_nothing(store: Store) -> None:
    """The sum of an increment is checked before it is written, alone or in a batch."""
    big = 9 * 10**4299
    await one(store, put(T1, "n", str(big)))
    alone = await one(store, ops.Increment(T1, "n", big, None, None))
    batched = await run(store, ops.Increment(T1, "n", big, None, None), put(T1, "k", "1"))
    for refused in (alone, batched[0]):
        assert isinstance(refused, StateValueError)
        assert str(refused).startswith("cannot increment key 'n': the result is an int of more")
    assert await one(store, ops.Items(T1)) == {"k": 1, "n": big}
