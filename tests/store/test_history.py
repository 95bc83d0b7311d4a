"""State history on every store: each change adds a version, bounded, with provenance."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from stateward import StateValueError, StateWriter
from stateward._records import AssetInfo
from stateward.store import SqliteStore
from stateward.store import base as ops
from stateward.store.base import AssetScope, Store, TaskScope, Writer
from stateward.store.sqlite import schema as sqlite_schema
from tests.pg import PgDatabase, run_async

T1 = TaskScope("d", "r1", "t", -1)
M0, M1 = TaskScope("d", "r1", "m", 0), TaskScope("d", "r1", "m", 1)
ORDERS = AssetInfo("orders", "s3://bucket/orders")
A = AssetScope(ORDERS.name, ORDERS.uri)
W = Writer("d", "r1", "t", -1, 2)
TRY2 = W.history_writer("box")
CLI = StateWriter(kind="cli", user="alice", host="box")


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store of each kind, keeping 3 versions per key."""
    made = make_store()
    made.history = 3  # type: ignore[attr-defined]
    async with made as opened:
        yield opened


async def one(store: Store, op: ops.Op, now: float = 100.0) -> Any:
    (result,) = await store.execute([op], now=now)
    return result


def summary(versions: Any) -> list[tuple[int, Any, bool, float, str]]:
    return [(v.version, v.value, v.deleted, v.updated_at, v.updated_by.label) for v in versions]


@pytest.mark.parametrize("scope", [T1, A], ids=["task", "asset"])
async def test_every_change_adds_a_version_newest_first(store: Store, scope: ops.Scope) -> None:
    """set, increment, a compare-and-set that won, delete: one version each, newest first;
    a compare-and-set that lost and a delete of an absent key add none."""
    await one(store, ops.Put(scope, "k", "1", None, W, TRY2), now=1)
    await one(store, ops.Increment(scope, "k", 4, None, W, TRY2), now=2)
    assert await one(store, ops.CompareAndSet(scope, "k", 99, "7", None, W, TRY2), now=3) is False
    assert await one(store, ops.CompareAndSet(scope, "k", 5, "6", None, None, CLI), now=4) is True
    await one(store, ops.Delete(scope, "k", CLI), now=5)
    await one(store, ops.Delete(scope, "k", CLI), now=6)
    history = await one(store, ops.History(scope, "k"))
    assert summary(history) == [
        (4, None, True, 5, "cli alice@box"),
        (3, 6, False, 4, "cli alice@box"),
        (2, 5, False, 2, "d/r1/t try 2 on box"),
    ]  # version 1 was cut: the store keeps 3
    assert history[-1].updated_by == TRY2


@pytest.mark.parametrize("scope", [T1, A], ids=["task", "asset"])
async def test_puts_of_one_key_in_one_batch_are_a_version_each(
    store: Store, scope: ops.Scope
) -> None:
    """Several puts of one key in one batch (group commit), among puts of other keys:
    each is a version, numbered in the batch's order, the last is the value, and the
    key keeps ``history`` versions."""

    def put(key: str, n: int) -> ops.Put:
        return ops.Put(scope, key, str(n), None, None, CLI)

    await store.execute([put("k", 1), put("j", 1), put("k", 2), put("k", 3)], now=1)
    assert [(v.version, v.value) for v in await one(store, ops.History(scope, "k"))] == [
        (3, 3), (2, 2), (1, 1),
    ]  # fmt: skip
    await store.execute([put("k", n) for n in range(4, 9)] + [put("j", 2)], now=2)
    assert [(v.version, v.value) for v in await one(store, ops.History(scope, "k"))] == [
        (8, 8), (7, 7), (6, 6),
    ]  # fmt: skip
    assert [v.version for v in await one(store, ops.History(scope, "j"))] == [2, 1]
    assert await store.execute([ops.Get(scope, "k"), ops.Get(scope, "j")], now=3) == [8, 2]


async def test_clear_adds_a_tombstone_per_key(store: Store) -> None:
    """Clearing a scope (or every map index) gives each key it removed a tombstone."""
    for scope in (M0, M1):
        await one(store, ops.Put(scope, "a", '"x"', None, None, CLI), now=1)
    await one(store, ops.Clear(M0, all_map_indices=True, who=CLI), now=2)
    for scope in (M0, M1):
        assert summary(await one(store, ops.History(scope, "a"))) == [
            (2, None, True, 2, "cli alice@box"),
            (1, "x", False, 1, "cli alice@box"),
        ]
    await one(store, ops.Put(A, "w", "1", None, None, CLI), now=3)
    assert await one(store, ops.Clear(A, who=CLI), now=4) == 1
    assert [v.deleted for v in await one(store, ops.History(A, "w"))] == [True, False]


async def test_expiry_removed_by_cleanup_is_a_version(store: Store) -> None:
    """An expired key that cleanup removes gets a tombstone by "cleanup"."""
    await one(store, ops.Put(T1, "k", "1", 50.0, W, TRY2), now=1)
    await one(store, ops.Put(A, "k", "1", 50.0, W, TRY2), now=1)
    assert await one(store, ops.Cleanup(dry_run=True), now=60) == 2
    assert len(await one(store, ops.History(T1, "k"))) == 1
    assert await one(store, ops.Cleanup(), now=60) == 2
    for scope in (T1, A):
        newest = (await one(store, ops.History(scope, "k")))[0]
        assert (newest.version, newest.deleted, newest.updated_by.kind) == (2, True, "cleanup")


async def test_cleanup_cuts_history_and_drops_it_for_a_gone_instance(store: Store) -> None:
    """Cleanup cuts every key to ``history`` versions (after it was lowered), and drops
    the history of a task instance with no state left once its last change is old."""
    for n in range(3):
        await one(store, ops.Put(A, "k", str(n), None, None, CLI), now=1 + n)
        await one(store, ops.Put(M1, "k", str(n), None, None, CLI), now=1 + n)
    await one(store, ops.Put(M0, "k", "0", None, None, CLI), now=1)
    await one(store, ops.Delete(M0, "k", CLI), now=2)
    store.history = 2  # type: ignore[attr-defined]
    await one(store, ops.Cleanup(orphans_before=10.0), now=20)
    assert [v.version for v in await one(store, ops.History(A, "k"))] == [3, 2]
    assert [v.version for v in await one(store, ops.History(M1, "k"))] == [3, 2]
    assert await one(store, ops.History(M0, "k")) == ()


@pytest.mark.parametrize("scope", [T1, A], ids=["task", "asset"])
async def test_a_changed_setting_keeps_the_newest_versions(store: Store, scope: ops.Scope) -> None:
    """Raising ``history`` keeps every version from then on up to the new bound (SQLite
    reuses the oldest version's slot only once it is past the bound), and lowering it
    cuts a key to the newest at its next write."""
    store.history = 2  # type: ignore[attr-defined]
    for n in range(1, 4):
        await one(store, ops.Put(scope, "k", str(n), None, None, CLI), now=n)
    store.history = 4  # type: ignore[attr-defined]
    for n in range(4, 7):
        await one(store, ops.Put(scope, "k", str(n), None, None, CLI), now=n)
    assert [v.version for v in await one(store, ops.History(scope, "k"))] == [6, 5, 4, 3]
    await one(store, ops.Put(scope, "k", "7", None, None, CLI), now=7)
    store.history = 2  # type: ignore[attr-defined]
    await one(store, ops.Put(scope, "k", "8", None, None, CLI), now=8)
    history = await one(store, ops.History(scope, "k"))
    assert [(v.version, v.value, v.updated_at) for v in history] == [(8, 8, 8.0), (7, 7, 7.0)]


async def test_history_zero_keeps_none(store: Store) -> None:
    """``history = 0`` keeps no versions; writes work as before."""
    store.history = 0  # type: ignore[attr-defined]
    await one(store, ops.Put(T1, "k", "1", None, W, TRY2))
    assert await one(store, ops.Get(T1, "k")) == 1
    assert await one(store, ops.History(T1, "k")) == ()


@pytest.mark.parametrize("scope", [T1, A], ids=["task", "asset"])
async def test_rollback_to_a_value_and_to_a_tombstone(store: Store, scope: ops.Scope) -> None:
    """Rollback writes the old value (or removes the key) as a new version marked as a
    rollback to it, by whom."""
    await one(store, ops.Put(scope, "w", "10", None, W, TRY2), now=1)
    await one(store, ops.Put(scope, "w", "3", None, W, TRY2), now=2)
    await one(store, ops.Rollback(scope, "w", 1, None, None, CLI), now=3)
    assert await one(store, ops.Get(scope, "w")) == 10
    newest = (await one(store, ops.History(scope, "w")))[0]
    assert (newest.version, newest.value, newest.updated_by.rollback_to) == (3, 10, 1)
    assert newest.updated_by.label == "rollback to version 1 by cli alice@box"
    await one(store, ops.Delete(scope, "w", CLI), now=4)
    await one(store, ops.Put(scope, "w", "5", None, W, TRY2), now=5)
    await one(store, ops.Rollback(scope, "w", 4, None, None, CLI), now=6)
    assert await one(store, ops.Get(scope, "w")) is None
    newest = (await one(store, ops.History(scope, "w")))[0]
    assert (newest.version, newest.deleted, newest.updated_by.rollback_to) == (6, True, 4)


async def test_rollback_to_an_unknown_version_is_refused(store: Store) -> None:
    """A version the history does not hold is refused, naming the versions it holds."""
    for n in range(5):
        await one(store, ops.Put(T1, "k", str(n), None, W, TRY2))
    refused = await one(store, ops.Rollback(T1, "k", 1, None, None, CLI))
    assert isinstance(refused, StateValueError)
    assert "has no version 1: its history holds versions 3 to 5" in str(refused)
    assert await one(store, ops.Get(T1, "k")) == 4


async def test_sqlite_file_before_history_keeps_its_state_and_gains_history(
    tmp_path: Path,
) -> None:
    """A file of the schema before history keeps its task and asset state when opened;
    the first change of a key then starts its history at version 1."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_schema.migrate(conn, str(path), to_version=_before_history(sqlite_schema.MIGRATIONS))
    conn.execute("INSERT INTO task_state VALUES ('d', 'r1', 't', -1, 'k', '7', 1.0, NULL, 2)")
    conn.execute("INSERT INTO asset VALUES (3, 'orders', 's3://bucket/orders', 1.0)")
    conn.execute(
        "INSERT INTO asset_state VALUES (3, 'w', '5', 1.0, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    conn.close()
    async with SqliteStore(path) as store:
        assert await one(store, ops.Get(T1, "k")) == 7
        assert await one(store, ops.Get(A, "w")) == 5
        await one(store, ops.Increment(A, "w", 1, None, None, CLI))
        assert summary(await one(store, ops.History(A, "w"))) == [
            (1, 6, False, 100.0, "cli alice@box")
        ]


async def test_postgres_schema_before_history_keeps_its_state_and_gains_history(
    pg_database: PgDatabase,
) -> None:
    """As for SQLite: an older PostgreSQL schema keeps its state and gains history."""
    from stateward.store.postgres import PostgresStore
    from stateward.store.postgres import schema as pg_schema

    schema = pg_database.new_schema()

    async def old() -> None:
        import asyncpg

        conn = await asyncpg.connect(pg_database.dsn)
        try:
            await pg_schema.migrate(
                conn, schema, "test", to_version=_before_history(pg_schema.MIGRATIONS)
            )
            await conn.execute(
                f'INSERT INTO "{schema}".task_state VALUES '
                "('d', 'r1', 't', -1, 'k', '7', '\\x00', 1.0, NULL, 2)"
            )
        finally:
            await conn.close()

    await trio.to_thread.run_sync(run_async, old())
    async with PostgresStore(pg_database.dsn, schema=schema) as store:
        assert await one(store, ops.Get(T1, "k")) == 7
        await one(store, ops.Put(T1, "k", "8", None, W, TRY2))
        assert [v.value for v in await one(store, ops.History(T1, "k"))] == [8]


def _before_history(migrations: Any) -> int:
    """The schema version just before the history tables (whatever its number)."""
    numbers = [version for version, statements in migrations if "task_item" in str(statements)]
    return int(numbers[0]) - 1
