"""PostgresStore under faults: a schema dropped or restored under a running runtime,
connections refused for a while, and a connection the server closed between batches.

They need the server that ``tests/pg.py`` finds (or starts), and change only this
session's own database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import trio

from stateward import Dag, StoreError, open_runtime
from stateward.records import AssetInfo
from stateward.store import base as ops
from stateward.store.base import AssetScope, TaskScope
from stateward.store.postgres import PostgresStore
from tests.pg import PgDatabase, run_async

T = TaskScope("d", "r", "t", -1)
ORDERS = AssetScope("orders", "s3://orders")
CUSTOMERS = AssetScope("customers", "s3://customers")
GONE = r"schema 't\d+' of .* was dropped or replaced"


@pytest.fixture
def database(pg_database: PgDatabase) -> PgDatabase:
    """The session's PostgreSQL database (these tests skip without a server)."""
    return pg_database


@pytest.fixture
def schema(database: PgDatabase) -> str:
    """A schema of this test's own."""
    return database.new_schema()


@pytest.fixture
async def store(database: PgDatabase, schema: str) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on a fresh schema."""
    async with PostgresStore(database.dsn, schema=schema) as opened:
        yield opened


async def one(store: PostgresStore, op: ops.Op, now: float = 100.0) -> Any:
    (result,) = await store.execute([op], now=now)
    return result


def put(scope: ops.Scope, key: str, text: str) -> ops.Put:
    return ops.Put(scope, key, text, None, None)


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


_STORE_BACKENDS = (
    "FROM pg_stat_activity WHERE application_name = 'stateward' "
    "AND datname = current_database() AND pid <> pg_backend_pid()"
)


async def _kill_store_connections(dsn: str) -> None:
    """Terminate the stores' backends and wait until they have exited (so the server has
    closed their sockets)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SELECT pg_terminate_backend(pid) {_STORE_BACKENDS}")
        for _ in range(500):
            if not await conn.fetchval(f"SELECT count(*) {_STORE_BACKENDS}"):
                return
            await conn.execute("SELECT pg_sleep(0.01)")
        msg = "the store's backends did not exit"
        raise AssertionError(msg)
    finally:
        await conn.close()


def kill_store_connections_blocking(dsn: str) -> None:
    """:func:`_kill_store_connections`, blocking trio's thread all along (as busy task
    code would), so the store's loop cannot see the connection close."""
    run_async(_kill_store_connections(dsn))


async def kill_store_connections(dsn: str) -> None:
    await trio.to_thread.run_sync(run_async, _kill_store_connections(dsn))


async def admin(dsn: str, *statements: str) -> None:
    await trio.to_thread.run_sync(run_async, _admin(dsn, *statements))


# -- a schema dropped or restored under a runtime (issue 18 item 2) -------------------------------


async def test_asset_ids_do_not_survive_a_restore(database: PgDatabase, schema: str) -> None:
    """Runtime A knows orders and customers; the schema is dropped and its backends killed;
    B registers customers first (id 1). A's next write to orders is refused with a clear
    error, and nothing lands on customers."""
    async with PostgresStore(database.dsn, schema=schema) as a:
        await a.execute([put(ORDERS, "watermark", "100"), put(CUSTOMERS, "n", "1")], now=1.0)
        await admin(database.dsn, f'DROP SCHEMA "{schema}" CASCADE')
        await kill_store_connections(database.dsn)
        async with PostgresStore(database.dsn, schema=schema) as b:
            await one(b, put(CUSTOMERS, "n", "5"))
            with pytest.raises(StoreError, match=GONE + r".*docs/scaling\.md"):
                await one(a, put(ORDERS, "watermark", "200"))
            with pytest.raises(StoreError, match=GONE):  # and on, until A is opened again
                await one(a, ops.Get(CUSTOMERS, "n"))
            assert await b.execute(
                [ops.Items(CUSTOMERS), ops.LookupAsset(name="orders")], now=2.0
            ) == [{"n": 5}, None]
    async with PostgresStore(database.dsn, schema=schema) as reopened:
        await one(reopened, put(ORDERS, "watermark", "200"))
        assert await reopened.execute([ops.Items(ORDERS), ops.Items(CUSTOMERS)], now=3.0) == [
            {"watermark": 200},
            {"n": 5},
        ]


async def test_a_dropped_schema_is_not_created_again_under_a_runtime(
    database: PgDatabase, schema: str
) -> None:
    """A store that reconnects and finds its schema gone refuses, and leaves it gone."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        await one(store, put(ORDERS, "watermark", "100"))
        await admin(database.dsn, f'DROP SCHEMA "{schema}" CASCADE')
        await kill_store_connections(database.dsn)
        with pytest.raises(StoreError, match=GONE):
            await one(store, put(T, "k", "1"))
    found = await trio.to_thread.run_sync(
        run_async, _fetchval(database.dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                             schema)
    )  # fmt: skip
    assert found == 0


async def _fetchval(dsn: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def test_asset_ids_are_read_again_after_a_reconnect(
    database: PgDatabase, schema: str
) -> None:
    """A data-only restore keeps the tables but renumbers the assets: after its backends
    were killed, runtime A looks its ids up again and writes where it means to."""
    async with PostgresStore(database.dsn, schema=schema) as a:
        await a.execute([put(ORDERS, "watermark", "100"), put(CUSTOMERS, "n", "1")], now=1.0)
        await admin(
            database.dsn,
            f'TRUNCATE "{schema}".asset, "{schema}".asset_state RESTART IDENTITY CASCADE',
        )
        await kill_store_connections(database.dsn)
        async with PostgresStore(database.dsn, schema=schema) as b:
            await one(b, put(CUSTOMERS, "n", "5"))
            await one(a, put(ORDERS, "watermark", "200"))
            assert await b.execute([ops.Items(CUSTOMERS), ops.Items(ORDERS)], now=2.0) == [
                {"n": 5},
                {"watermark": 200},
            ]
