"""PostgresStore specifics: exact values, the schema and its migrations, redaction,
lost connections and timeouts, and several runtimes (and processes) on one database.

The behaviour every store shares runs against PostgreSQL through the ``make_store``
fixture; these tests cover what only this store has. They need the server that
``tests/pg.py`` finds (or starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from stateward import (
    Asset,
    Dag,
    NotAStatewardDatabaseError,
    StaleAttemptError,
    StateTypeError,
    StateWriter,
    StoreError,
    open_runtime,
)
from stateward._errors import StateValueError
from stateward._records import AssetInfo, AttemptRecord, Lease, TaskNode
from stateward._runtime.runtime import default_db
from stateward.store import base as ops
from stateward.store import open_store
from stateward.store.base import AssetScope, TaskScope
from stateward.store.postgres import PostgresStore, redact_dsn
from stateward.store.postgres.schema import SCHEMA_VERSION, migrate
from tests.pg import PgDatabase, run_async
from tests.store._pg import one, put

T = TaskScope("d", "r", "t", -1)
WORKER = Path(__file__).with_name("pg_worker.py")
CLOSED_PORT = "postgresql://alice:s3cret@127.0.0.1:1/nowhere"


async def sql(dsn: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on its own asyncio connection (in a thread: trio runs here)."""

    async def go() -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return await trio.to_thread.run_sync(run_async, go())


@contextmanager
def row_locked(dsn: str, statement: str) -> Iterator[None]:
    """Hold the locks ``statement`` takes, in an open transaction on another connection."""
    ready, release = threading.Event(), threading.Event()

    async def hold() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(statement)
                ready.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finally:
            await conn.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert ready.wait(10), "the locking connection did not start"
        yield
    finally:
        release.set()
        thread.join(10)


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"b":1,"a":2}', "1.0", "1e+16", "10000000000000000", "-0.0", '{"é":"ü","a":[1.5e-07]}',
     str(2**80), '"\\u0000 is escaped"'],
)  # fmt: skip
async def test_values_read_back_exactly(store: PostgresStore, text: str) -> None:
    """A value reads back as written: key order, int vs float, exponent, NUL escapes."""
    await one(store, put(T, "k", text))
    value = await one(store, ops.Get(T, "k"))
    assert json.dumps(value, separators=(",", ":"), ensure_ascii=False) == json.dumps(
        json.loads(text), separators=(",", ":"), ensure_ascii=False
    )
    assert type(value) is type(json.loads(text))


async def test_jsonb_would_not_round_trip(database: PgDatabase) -> None:
    """Why values are text: jsonb reorders keys and reads 1e+16 back as an int."""
    rows = await sql(database.dsn, """SELECT '{"b":1,"a":2}'::jsonb::text, '1e+16'::jsonb::text""")
    assert rows == [('{"a": 2, "b": 1}', "10000000000000000")]


@pytest.mark.parametrize(
    ("stored", "expected", "swaps"),
    [
        ('{"a":1,"b":[2,{"c":3,"d":4}]}', {"b": [2, {"d": 4, "c": 3}], "a": 1}, True),
        ("1e+16", 10**16, False),
        ("10000000000000000", 1e16, False),
        ("-0.0", 0.0, True),
        ('[1,true]', [1, 1], False),
        ('"1"', 1, False),
    ],
)  # fmt: skip
async def test_compare_and_set_compares_json_exactly(
    store: PostgresStore, stored: str, expected: Any, swaps: bool
) -> None:
    """CAS is one statement on a digest: key order is ignored, types are not."""
    await one(store, put(T, "k", stored))
    assert await one(store, ops.CompareAndSet(T, "k", expected, '"new"', None, None)) is swaps


async def test_increment_is_exact_beyond_64_bits(store: PostgresStore) -> None:
    """The increment adds in SQL numeric: no overflow, negative steps work."""
    await one(store, put(T, "n", str(2**80)))
    assert await one(store, ops.Increment(T, "n", 1, None, None)) == 2**80 + 1
    assert await one(store, ops.Increment(T, "n", -(2**81), None, None)) == 1 - 2**80
    assert await one(store, ops.Get(T, "n")) == 1 - 2**80


async def test_increment_of_integral_float_is_refused(store: PostgresStore) -> None:
    """2.0 is a float, refused with the same text as the other stores, alone or batched."""
    await one(store, put(T, "f", "2.0"))
    refused = await one(store, ops.Increment(T, "f", 1, None, None))
    assert isinstance(refused, StateTypeError)
    assert str(refused).startswith("cannot increment key 'f': it holds float 2.0, not an int")
    assert await one(store, ops.Get(T, "f")) == 2.0


async def test_nul_in_a_key_refuses_that_operation_only(store: PostgresStore) -> None:
    """PostgreSQL text cannot hold U+0000: the one operation is refused, the batch goes on."""
    results = await store.execute([put(T, "a\x00b", "1"), put(T, "ok", "1")], now=1.0)
    assert isinstance(results[0], StateValueError)
    assert "NUL character" in str(results[0])
    assert results[1] is None
    assert await one(store, ops.Items(T)) == {"ok": 1}


NUL_PUTS = {
    "key": put(T, "k\x00", "1"),
    "scope": put(TaskScope("d", "r\x00", "t", -1), "k", "1"),
    "writer": ops.Put(T, "k", "1", None, ops.Writer("d", "r", "t\x00", -1, 1)),
    "who": ops.Put(T, "k", "1", None, None, StateWriter(kind="cli", user="a\x00")),
}


@pytest.mark.parametrize("where", list(NUL_PUTS))
@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
async def test_nul_anywhere_in_a_put_refuses_it_alone_or_in_a_run(
    store: PostgresStore, where: str, fenced: bool
) -> None:
    """A put with a NUL in any of its names is refused, alone or in a run of puts, fenced
    or not (a fenced one once its lease is found held; a stale one is refused as stale)."""
    await store.execute([ops.RecordRun("d", "r", "running", 1.0), _acquire("A")], now=1.0)
    bad = NUL_PUTS[where]
    lease = Lease("d", "r", "t", -1, "A", 1)
    if fenced:
        bad = ops.Fenced(lease, bad)
    alone = await one(store, bad)
    in_run = await store.execute([bad, put(T, "ok", "1")], now=1.0)
    assert isinstance(alone, StateValueError)
    assert isinstance(in_run[0], StateValueError)
    assert "NUL character" in str(alone)
    assert in_run[1] is None
    if fenced:
        stale = ops.Fenced(attrs.evolve(lease, try_number=2), NUL_PUTS[where])
        assert isinstance(await one(store, stale), StaleAttemptError)
    assert await one(store, ops.Items(T)) == {"ok": 1}


def _acquire(holder: str) -> ops.AcquireLease:
    return ops.AcquireLease(
        "d", "r", "t", -1, holder, 60.0, 0, AttemptRecord(0, "running", 1.0, host="h", pid=1)
    )


async def test_a_run_of_puts_keeps_its_order_and_refuses_one_by_one(store: PostgresStore) -> None:
    """Consecutive puts go as one pipelined statement each for task and asset rows (and
    one each for their versions): the later put of a key wins and is the newer version,
    and a refused put (NUL, asset conflict) fails alone."""
    orders = AssetScope("orders", "s3://o")
    await one(store, ops.RegisterAssets((AssetInfo("orders", "s3://o"),)))
    results = await store.execute(
        [
            put(T, "k", "1"),
            put(orders, "w", "1"),
            put(T, "bad\x00", "1"),
            put(AssetScope("other", "s3://o"), "w", "2"),
            put(T, "k", "2"),
        ],
        now=1.0,
    )
    assert [type(r).__name__ for r in results] == [
        "NoneType", "NoneType", "StateValueError", "AssetConflictError", "NoneType",
    ]  # fmt: skip
    assert await store.execute([ops.Items(T), ops.Items(orders)], now=1.0) == [{"k": 2}, {"w": 1}]
    assert await one(store, ops.LookupAsset(name="other")) is None
    histories = await store.execute([ops.History(T, "k"), ops.History(orders, "w")], now=1.0)
    assert [[(v.version, v.value) for v in h] for h in histories] == [[(2, 2), (1, 1)], [(1, 1)]]


async def test_lone_writes_to_a_new_asset_register_it(store: PostgresStore) -> None:
    """A lone increment or expect-absent CAS on an unknown asset (one statement, no BEGIN)
    falls back to a transaction that registers the asset first; a delete registers none."""
    assert await one(store, ops.Delete(AssetScope("gone"), "k")) is False
    assert await one(store, ops.Increment(AssetScope("hits"), "n", 5, None, None)) == 5
    assert await one(store, ops.CompareAndSet(AssetScope("lock"), "k", None, "1", None, None))
    found = await store.execute(
        [ops.LookupAsset(name="gone"), ops.LookupAsset(name="hits"), ops.LookupAsset(name="lock")],
        now=1.0,
    )
    assert found == [None, AssetInfo("hits", "hits"), AssetInfo("lock", "lock")]


async def test_an_error_mid_batch_rolls_the_batch_back(store: PostgresStore) -> None:
    """A batch that raises part way writes nothing, and the store keeps working."""
    with pytest.raises(ValueError, match="Expecting property name"):
        await store.execute([put(T, "first", "1"), put(T, "bad", "{not json")], now=1.0)
    assert await one(store, ops.Items(T)) == {}
    await one(store, put(T, "after", "1"))
    assert await one(store, ops.Items(T)) == {"after": 1}


# -- configuration and messages --------------------------------------------------------------


def test_redact_dsn_hides_every_password() -> None:
    """The password goes, in the user part or the query; the rest stays readable."""
    assert redact_dsn("postgresql://al:pw@db:5432/x") == "postgresql://al:***@db:5432/x"
    assert redact_dsn("postgres://al@db/x?password=pw&sslmode=require") == (
        "postgres://al@db/x?password=***&sslmode=require"
    )
    assert redact_dsn("postgresql://db/x") == "postgresql://db/x"
    assert redact_dsn("postgresql://a%40b:p%3Aw@db/x") == "postgresql://a%40b:***@db/x"


def test_repr_hides_the_password() -> None:
    """repr() shows the redacted DSN and the schema."""
    store = PostgresStore("postgresql://al:s3cret@db/x", schema="sw")
    assert repr(store) == "PostgresStore('postgresql://al:***@db/x', schema='sw')"
    assert store.dsn == "postgresql://al:s3cret@db/x"


def test_bad_arguments_are_refused() -> None:
    """Not a URL, a schema that is not a plain identifier, a non-positive timeout."""
    with pytest.raises(ValueError, match=r"starts with postgresql:// or postgres://, got 'x.db'"):
        PostgresStore("x.db")
    with pytest.raises(ValueError, match=r"lower-case PostgreSQL identifier .* got 'a; drop'"):
        PostgresStore("postgresql://db/x", schema="a; drop")
    with pytest.raises(ValueError, match=r"command_timeout must be a positive number"):
        PostgresStore("postgresql://db/x", command_timeout=0)


async def test_unreachable_server_error_is_clear_and_redacted() -> None:
    """Opening a store on a closed port raises StoreError (not a group), password hidden."""
    with pytest.raises(StoreError) as caught:
        async with PostgresStore(CLOSED_PORT + "?password=qu3ry"):
            pass
    text = str(caught.value)
    assert text.startswith("PostgreSQL store postgresql://alice:***@127.0.0.1:1/nowhere")
    assert "check the server is up" in text
    assert "s3cret" not in text
    assert "qu3ry" not in text


def test_open_store_picks_the_postgres_store_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """postgresql:// and postgres:// URLs, given or in $STATEWARD_DB, make a PostgresStore;
    its own options pass through."""
    for url in ("postgresql://db/x", "postgres://db/x"):
        assert isinstance(open_store(url), PostgresStore)
    assert open_store("postgresql://db/x", schema="other").schema == "other"
    monkeypatch.setenv("STATEWARD_DB", "postgresql://u:pw@db/x")
    chosen = open_store(default_db())
    assert isinstance(chosen, PostgresStore)
    assert chosen.schema == "stateward"


async def test_errors_of_the_runtime_block_come_out_unwrapped(
    database: PgDatabase, schema: str
) -> None:
    """An error raised inside ``async with open_runtime(...)`` is not an exception group."""
    with pytest.raises(KeyError, match="mine") as caught:
        async with open_runtime(store=PostgresStore(database.dsn, schema=schema)):
            raise KeyError("mine")
    assert type(caught.value) is KeyError


# -- the schema --------------------------------------------------------------------------------


async def test_a_new_schema_is_created_at_the_current_version(
    store: PostgresStore, database: PgDatabase, schema: str
) -> None:
    """Opening creates the schema, its tables and one schema_version row per migration."""
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def old_schema(
    database: PgDatabase, schema: str, version: int, fill: Callable[[Any], Awaitable[None]]
) -> None:
    """Make ``schema`` at schema ``version``, as a release of that version left it, with
    what ``fill`` writes through the asyncpg connection it is given."""

    async def old() -> None:
        import asyncpg

        conn = await asyncpg.connect(database.dsn)
        try:
            await migrate(conn, schema, "test", to_version=version)
            await fill(conn)
        finally:
            await conn.close()

    await trio.to_thread.run_sync(run_async, old())


async def test_version_1_schema_is_migrated(database: PgDatabase, schema: str) -> None:
    """A schema at version 1 is brought to the current version, its rows kept."""

    async def old(conn: Any) -> None:
        await conn.execute(
            f'INSERT INTO "{schema}".task_state VALUES '
            "('d', 'r', 't', -1, 'job_id', '\"J-7\"', '\\x00', 1.0, NULL)"
        )

    await old_schema(database, schema, 1, old)
    async with PostgresStore(database.dsn, schema=schema) as store:
        (entries,) = await store.execute([ops.ListEntries()], now=2.0)
    assert [(e.key, e.value, e.writer) for e in entries] == [("job_id", "J-7", None)]
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_version_2_schema_with_assets_is_migrated(database: PgDatabase, schema: str) -> None:
    """A schema at version 2 keeps its assets after the migration that lets a one-sided
    asset leave the other side unbound, and completes one declared later."""

    async def old(conn: Any) -> None:
        await conn.execute(
            f'INSERT INTO "{schema}".asset (name, uri, created_at) '
            "VALUES ('orders', 's3://orders', 1.0)"
        )

    await old_schema(database, schema, 2, old)
    async with PostgresStore(database.dsn, schema=schema) as store:
        results = await store.execute(
            [
                ops.LookupAsset(uri="s3://orders"),
                ops.Put(AssetScope(name="later"), "k", "1", None, None),
                ops.RegisterAssets((AssetInfo("later", "s3://later"),)),
                ops.Get(AssetScope(uri="s3://later"), "k"),
            ],
            now=2.0,
        )
    assert results == [AssetInfo("orders", "s3://orders"), None, None, 1]


async def test_concurrent_openers_migrate_once(database: PgDatabase, schema: str) -> None:
    """Runtimes opening one new schema at once: one migrates, the others wait and use it."""
    opened: list[int] = []

    async def open_one() -> None:
        async with PostgresStore(database.dsn, schema=schema) as store:
            await one(store, ops.Increment(T, "n", 1, None, None))
            opened.append(1)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(open_one)
    assert len(opened) == 4
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_newer_schema_is_refused(database: PgDatabase, schema: str) -> None:
    """A schema written by a newer stateward is not opened."""
    async with PostgresStore(database.dsn, schema=schema):
        pass
    await sql(database.dsn, f'INSERT INTO "{schema}".schema_version VALUES (99, 0)')
    with pytest.raises(NotAStatewardDatabaseError, match=r"schema version 99, newer .* upgrade"):
        async with PostgresStore(database.dsn, schema=schema):
            pass


async def test_foreign_schema_is_refused_untouched(database: PgDatabase, schema: str) -> None:
    """A schema holding another application's tables is refused and left as it was."""
    await sql(database.dsn, f'CREATE SCHEMA "{schema}"')
    await sql(database.dsn, f'CREATE TABLE "{schema}".orders (id int)')
    with pytest.raises(NotAStatewardDatabaseError, match=r"another application \(orders\)"):
        async with PostgresStore(database.dsn, schema=schema):
            pass
    tables = await sql(
        database.dsn, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
    )
    assert tables == [("orders",)]


# -- connections and timeouts ----------------------------------------------------------------


async def test_lost_connection_fails_at_most_one_batch(
    store: PostgresStore, database: PgDatabase
) -> None:
    """A connection the server dropped fails a batch at most; the next one reconnects."""
    await one(store, put(T, "k", "1"))
    await sql(
        database.dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'stateward' AND datname = current_database()",
    )
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(await one(store, ops.Get(T, "k")))
        except StoreError as exc:
            outcomes.append(str(exc))
    assert outcomes[-1] == 1
    assert outcomes[0] == 1 or "connection" in outcomes[0]


async def test_a_statement_waiting_past_command_timeout_is_undone(
    database: PgDatabase, schema: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A write blocked by another transaction's lock fails after command_timeout seconds of
    real time (trio's autojumping clock does not fire it early), writes nothing, and the
    store goes on."""
    async with PostgresStore(database.dsn, schema=schema, command_timeout=0.5) as store:
        await one(store, put(T, "k", "1"))
        locker = f"SELECT * FROM \"{schema}\".task_state WHERE key = 'k' FOR UPDATE"
        with (
            row_locked(database.dsn, locker),
            pytest.raises(StoreError, match=r"statement timeout .* raise command_timeout"),
        ):
            await one(store, put(T, "k", "2"))
        assert await one(store, ops.Get(T, "k")) == 1
        await one(store, put(T, "k", "3"))
        assert await one(store, ops.Get(T, "k")) == 3


async def test_a_server_that_never_answers_times_out_on_real_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that accepts and then says nothing fails the opening after connect_timeout
    seconds of real time, with a clear StoreError."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = PostgresStore(f"postgresql://u:pw@127.0.0.1:{port}/x", connect_timeout=0.3)
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"no answer within 0\.3 s .* raise connect_timeout"):
            async with store:
                pass
        assert 0.3 <= time.monotonic() - start < 2


# -- several runtimes ----------------------------------------------------------------------------


async def test_two_runtimes_share_state(database: PgDatabase, schema: str) -> None:
    """What one runtime's task writes, another runtime reads; increments from both add up."""
    dag = Dag("shared")
    counter = Asset("hits")

    @dag.task
    async def remember(task_state: Any) -> None:
        await task_state.aset("job_id", "J-1")

    @dag.task(outlets=[counter])
    async def hit(i: int, asset_state: Any) -> None:
        for _ in range(20):
            await asset_state.aincrement("n")

    hit.expand(i=list(range(5)))
    async with (
        open_runtime(store=PostgresStore(database.dsn, schema=schema)) as one_rt,
        open_runtime(store=PostgresStore(database.dsn, schema=schema)) as other_rt,
    ):
        result = await one_rt.run_task(remember, run_id="r")
        assert result.state == "success"
        assert await other_rt.state.task("shared", "r", "remember").aget("job_id") == "J-1"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(one_rt.run_dag, dag, run_id="a"))
            nursery.start_soon(partial(other_rt.run_dag, dag, run_id="b"))
        assert await one_rt.state.asset(counter).aget("n") == 200
        assert one_rt.store.write_transactions < 100  # group commit: batches of increments


async def test_four_processes_increment_one_key_exactly(database: PgDatabase, schema: str) -> None:
    """4 processes, a runtime each, 150 increments each (3 concurrent instances of 50):
    exactly 600, every intermediate value given out once; task state crosses runtimes."""
    async with open_runtime(store=PostgresStore(database.dsn, schema=schema)) as rt:
        await rt.state.task("seed", "run", "t").aset("greeting", "hello from the test")
    commands = [
        [sys.executable, str(WORKER), database.dsn, schema, str(i), "3", "50"] for i in range(4)
    ]
    outputs: list[subprocess.CompletedProcess[bytes]] = []

    async def work(command: list[str]) -> None:
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for command in commands:
                nursery.start_soon(work, command)
    reports = [json.loads(out.stdout.decode().strip().splitlines()[-1]) for out in outputs]
    assert [r["seen"] for r in reports] == ["hello from the test"] * 4
    given = sorted(n for r in reports for n in r["increments"])
    assert given == list(range(1, 601))
    async with open_runtime(store=PostgresStore(database.dsn, schema=schema)) as rt:
        assert await rt.state.asset(name="counter").aget("n") == 600
        # History numbered every concurrent increment once, in commit order.
        history = await rt.state.asset(name="counter").ahistory("n")
        assert [(v.version, v.value) for v in history] == [(n, n) for n in range(600, 590, -1)]
        written = [
            await rt.state.task("workers", f"worker{i}", "note").aget("written_by")
            for i in range(4)
        ]
    assert written == [0, 1, 2, 3]


async def _until_a_statement_waits_for_a_lock(dsn: str) -> None:
    """Poll the server (another connection's state: no event to wait for)."""
    waiting = (
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    with trio.fail_after(10):
        while not await sql(dsn, waiting):  # noqa: ASYNC110
            await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        # As a writer that leaves the row's version unknown (an increment, say) ...
        ("UPDATE {s}.task_state SET value = '3', version = NULL WHERE key = 'k'", 3),
        # ... or as a put that keeps it (the row counted).
        ("UPDATE {s}.task_state SET value = '3', version = 3 WHERE key = 'k'", 3),
        ("DELETE FROM {s}.task_state WHERE key = 'k'", None),
    ],
    ids=["updated", "updated-counted", "deleted"],
)
async def test_a_put_waiting_for_another_version_is_numbered_after_it(
    database: PgDatabase, schema: str, change: str, value: int | None
) -> None:
    """A put of a key with history on is one statement that numbers its version from the
    row, or from its snapshot's history; when another transaction writes a version of
    the key while the put waits for its row, the put still comes after that version,
    numbered next."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        await one(store, put(T, "k", "1"))
        await one(store, put(T, "k", "2"))
        s = f'"{schema}"'
        version = (
            f"INSERT INTO {s}.task_state_history (dag_id, run_id, task_id, item, key, version, "
            f"value, updated_at, updated_by) VALUES ('d', 'r', 't', '', 'k', 3, "
            f'{"NULL" if value is None else repr(str(value))}, 1, \'{{"kind":"test"}}\')'
        )
        async with trio.open_nursery() as nursery:
            with row_locked(database.dsn, f"{change.format(s=s)}; {version}"):
                nursery.start_soon(one, store, put(T, "k", "4"))
                await _until_a_statement_waits_for_a_lock(database.dsn)
        history = await one(store, ops.History(T, "k"))
        assert [(v.version, v.value) for v in history][:3] == [(4, 4), (3, value), (2, 2)]
        assert await one(store, ops.Get(T, "k")) == 4


async def test_a_put_of_a_new_key_waiting_for_another_insert_is_numbered_after_it(
    database: PgDatabase, schema: str
) -> None:
    """A put of a key with no row is one statement too (an insert that does nothing on a
    conflict); when another transaction inserts the key, with a version, while the put
    waits for it, the put still comes after that version, numbered next."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        await one(store, put(T, "k", "1"))
        await one(store, ops.Delete(T, "k"))  # version 2, a tombstone; no row
        s = f'"{schema}"'
        insert = (
            f"INSERT INTO {s}.task_state (dag_id, run_id, task_id, item, key, value, "
            "value_digest, updated_at, map_index) VALUES ('d', 'r', 't', '', 'k', '3', "
            f"sha256('3'), 1, -1); INSERT INTO {s}.task_state_history (dag_id, run_id, "
            "task_id, item, key, version, value, updated_at, updated_by) VALUES "
            "('d', 'r', 't', '', 'k', 3, '3', 1, '{\"kind\":\"test\"}')"
        )
        async with trio.open_nursery() as nursery:
            with row_locked(database.dsn, insert):
                nursery.start_soon(one, store, put(T, "k", "4"))
                await _until_a_statement_waits_for_a_lock(database.dsn)
        history = await one(store, ops.History(T, "k"))
        assert [(v.version, v.value) for v in history] == [(4, 4), (3, 3), (2, None), (1, 1)]
        assert await one(store, ops.Get(T, "k")) == 4


FENCED_T = TaskScope("d", "r", "t", 3)


async def _leased(store: PostgresStore) -> Lease:
    """Instance ``d.t[3]`` of run ``r``, leased by runtime ``A``: its lease."""
    start = AttemptRecord(0, "running", 1.0, host="h", pid=1)
    await store.execute(
        [
            ops.RecordRun("d", "r", "running", 1.0),
            ops.AcquireLease("d", "r", "t", 3, "A", 60.0, 0, start),
        ],
        now=1.0,
    )
    return Lease("d", "r", "t", 3, "A", 1)


def _fenced_put(lease: Lease, value: str, key: str = "k") -> ops.Fenced:
    writer = ops.Writer("d", "r", "t", 3, lease.try_number)
    return ops.Fenced(lease, ops.Put(FENCED_T, key, value, None, writer))


@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "existing-key"])
@pytest.mark.parametrize("puts", [1, 3], ids=["alone", "in-a-batch"])
async def test_fenced_puts_waiting_for_a_takeover_are_refused(
    database: PgDatabase, schema: str, existing: bool, puts: int
) -> None:
    """Fenced puts that meet a takeover in progress, alone in a batch (one statement) or
    several (their leases read in one statement), wait for it, then find the lease
    gone: refused, nothing written."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        lease = await _leased(store)
        if existing:
            assert await one(store, _fenced_put(lease, "1")) is None
        takeover = (
            f"UPDATE \"{schema}\".task_instance SET lease_holder = 'B', lease_try = 2 "
            "WHERE dag_id = 'd' AND run_id = 'r' AND task_id = 't' AND map_index = 3"
        )
        answers: list[Any] = []

        async def late_puts() -> None:
            batch = [_fenced_put(lease, str(n), "kjl"[n]) for n in range(puts)]
            answers.extend(await store.execute(batch, now=100.0))

        async with trio.open_nursery() as nursery:
            with row_locked(database.dsn, takeover):
                nursery.start_soon(late_puts)
                await _until_a_statement_waits_for_a_lock(database.dsn)
        assert [type(a) for a in answers] == [StaleAttemptError] * puts
        history = await one(store, ops.History(FENCED_T, "k"))
        assert [(v.version, v.value) for v in history] == ([(1, 1)] if existing else [])
        items = await one(store, ops.Items(FENCED_T))
        assert items == ({"k": 1} if existing else {})


async def test_a_takeover_waits_for_a_lone_fenced_put_in_flight(
    database: PgDatabase, schema: str
) -> None:
    """A fenced put alone in a batch holds its lease's row from its check to its commit:
    a takeover meanwhile cannot change the row (here it gives up at lock_timeout) until
    the put has committed."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        lease = await _leased(store)
        assert await one(store, _fenced_put(lease, "1")) is None
        s = f'"{schema}"'
        hold_row = f"SELECT 1 FROM {s}.task_state WHERE key = 'k' FOR UPDATE"
        takeover = (
            f"UPDATE {s}.task_instance SET lease_holder = 'B', lease_try = 2 "
            "WHERE dag_id = 'd' AND run_id = 'r' AND task_id = 't' AND map_index = 3"
        )

        async def try_takeover() -> str:
            async def go() -> str:
                import asyncpg

                conn = await asyncpg.connect(database.dsn, server_settings={"lock_timeout": "300"})
                try:
                    return str(await conn.execute(takeover))
                except asyncpg.LockNotAvailableError:
                    return "lock not available"
                finally:
                    await conn.close()

            return await trio.to_thread.run_sync(run_async, go())

        answers: list[Any] = []

        async def put_held_up() -> None:
            answers.append(await one(store, _fenced_put(lease, "2")))

        async with trio.open_nursery() as nursery:
            with row_locked(database.dsn, hold_row):
                nursery.start_soon(put_held_up)
                await _until_a_statement_waits_for_a_lock(database.dsn)
                assert await try_takeover() == "lock not available"
        assert answers == [None]
        assert await one(store, ops.Get(FENCED_T, "k")) == 2
        assert await try_takeover() == "UPDATE 1"
        assert isinstance(await one(store, _fenced_put(lease, "3")), StaleAttemptError)


async def test_lone_puts_among_every_other_write_number_each_version_once(
    database: PgDatabase, schema: str
) -> None:
    """A lone put numbers its version from the key's row when the row carries it; every
    other write of the key by another store (an increment, a compare-and-set, puts in a
    batch, a delete, a rollback, a put) leaves the row so that the first store's next
    lone put is still numbered right after it."""
    writes: list[ops.Op | list[ops.Op]] = [
        ops.Increment(T, "k", 1, None, None),
        ops.CompareAndSet(T, "k", 1, "7", None, None),
        [put(T, "k", "8"), put(T, "j", "0"), put(T, "k", "9")],
        ops.Delete(T, "k"),
        ops.Rollback(T, "k", 2, None, None),
        put(T, "k", "5"),
    ]
    async with (
        PostgresStore(database.dsn, schema=schema, history=50) as store,
        PostgresStore(database.dsn, schema=schema, history=50) as other,
    ):
        await one(store, put(T, "k", "1"))
        for write in writes:
            await one(store, put(T, "k", "1"))
            await other.execute(write if isinstance(write, list) else [write], now=2.0)
            await one(store, put(T, "k", "2"))
        history = await one(store, ops.History(T, "k"))
    assert [v.version for v in history] == list(range(20, 0, -1))
    assert [v.value for v in history[:3]] == [2, 5, 1]


async def test_a_counted_row_behind_its_history_is_put_by_the_versioned_form(
    database: PgDatabase, schema: str
) -> None:
    """A version added by a writer that does not keep the row's number (a runtime older
    than schema 8, still connected when another migrated the database) makes the
    counted form collide; the put is then numbered from the history, and so are the
    next ones."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        await one(store, put(T, "k", "1"))
        await one(store, put(T, "k", "2"))  # counted: the session knows the row's number
        await sql(
            database.dsn,
            f'INSERT INTO "{schema}".task_state_history (dag_id, run_id, task_id, item, key, '
            "version, value, updated_at, updated_by) VALUES ('d', 'r', 't', '', 'k', 3, '3', "
            '1, \'{"kind":"test"}\')',
        )
        await one(store, put(T, "k", "4"))
        await one(store, put(T, "k", "5"))
        history = await one(store, ops.History(T, "k"))
    assert [(v.version, v.value) for v in history] == [(5, 5), (4, 4), (3, 3), (2, 2), (1, 1)]


async def test_cleanup_keeping_no_history_leaves_no_row_counted(
    database: PgDatabase, schema: str
) -> None:
    """A cleanup by a store keeping no history cuts every version, and with them what
    the rows' numbers stood for: the next versions count from the (empty) history."""
    async with PostgresStore(database.dsn, schema=schema) as store:
        for text in ("1", "2", "3"):
            await one(store, put(T, "k", text))
    async with PostgresStore(database.dsn, schema=schema, history=0) as keeps_none:
        await one(keeps_none, ops.Cleanup())
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".task_state')
    assert rows == [(None,)]
    async with PostgresStore(database.dsn, schema=schema) as store:
        await one(store, put(T, "k", "4"))
        history = await one(store, ops.History(T, "k"))
    assert [(v.version, v.value) for v in history] == [(1, 4)]


async def test_a_put_of_a_key_an_item_adopted_is_numbered_after_the_items_history(
    database: PgDatabase, schema: str
) -> None:
    """State kept by position that an item adopts while the item's own history stays
    (it has some) is numbered on from the item's history, not the position's, also by
    a store that put the item's key before."""
    item = TaskScope("d", "r", "m", 0, item="k:1")
    async with (
        PostgresStore(database.dsn, schema=schema) as store,
        PostgresStore(database.dsn, schema=schema) as other,
    ):
        for text in ("1", "2", "3"):
            await one(store, put(item, "k", text))
        await one(other, ops.Delete(item, "k"))  # the item keeps history, no state
        await one(other, put(TaskScope("d", "r", "m", 0, item="#0"), "k", "9"))
        await one(other, ops.RecordItem("d", "r", "m", 0, "k:1"))
        await one(store, put(item, "k", "10"))
        history = await one(store, ops.History(item, "k"))
    assert [(v.version, v.value) for v in history] == [
        (5, 10), (4, None), (3, 3), (2, 2), (1, 1),
    ]  # fmt: skip


async def test_concurrent_puts_of_one_key_number_every_version_once(
    database: PgDatabase, schema: str
) -> None:
    """Four stores putting one key at once: every put is a version, numbered in commit
    order, and the newest version is the value the key holds."""
    async with PostgresStore(database.dsn, schema=schema) as first:
        await one(first, put(T, "k", "0"))

    async def puts(lane: int) -> None:
        async with PostgresStore(database.dsn, schema=schema) as store:
            for i in range(50):
                await one(store, put(T, "k", str(lane * 1000 + i)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for lane in range(1, 5):
                nursery.start_soon(puts, lane)
    async with PostgresStore(database.dsn, schema=schema) as store:
        history = await one(store, ops.History(T, "k"))
        assert [v.version for v in history] == list(range(201, 191, -1))
        assert history[0].value == await one(store, ops.Get(T, "k"))
    rows = await sql(
        database.dsn, f"SELECT count(*) FROM \"{schema}\".task_state_history WHERE key = 'k'"
    )
    assert rows == [(10,)]


# -- the command line ---------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STATEWARD_DB"}
    script = Path(sys.executable).with_name("stateward")
    command = (
        [str(script), *args] if script.exists() else [sys.executable, "-m", "stateward._cli", *args]
    )
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_cli_sets_and_gets_state_on_postgres(database: PgDatabase) -> None:
    """--db postgresql://... works like a file: set, then get, in separate processes."""
    set_ = _cli(
        "state", "set", "w", '{"day":"2024-06-01"}', "--asset", "orders", "--db", database.dsn
    )
    assert set_.returncode == 0, set_.stderr
    got = _cli("state", "get", "w", "--asset", "orders", "--db", database.dsn)
    assert (got.returncode, json.loads(got.stdout)) == (0, {"day": "2024-06-01"})


def test_cli_error_hides_the_password() -> None:
    """An unreachable server is one 'error:' line, exit 1, without the password."""
    result = _cli("state", "list", "--db", CLOSED_PORT)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: PostgreSQL store postgresql://alice:***@127.0.0.1:1/")
    assert "s3cret" not in result.stderr


async def test_asset_scope_by_uri_on_a_fresh_runtime(database: PgDatabase, schema: str) -> None:
    """Asset ids are found again by a new store (nothing cached across stores is needed)."""
    async with PostgresStore(database.dsn, schema=schema) as first:
        await one(first, put(AssetScope("orders", "s3://o"), "w", "1"))
    async with PostgresStore(database.dsn, schema=schema) as second:
        assert await one(second, ops.Get(AssetScope(uri="s3://o"), "w")) == 1


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:S3cr#et@127.0.0.1:5432/test",
        "postgresql://alice:Zz9/k3y@127.0.0.1:5432/test",
        "postgresql://alice:wh?at@127.0.0.1/test",
    ],
)
def test_an_unparseable_dsn_is_refused_without_its_password(dsn: str) -> None:
    """A password with an unencoded '#', '/' or '?' is refused, and never shown."""
    with pytest.raises(ValueError, match=r"does not parse: percent-encode") as caught:
        PostgresStore(dsn)
    secret = dsn.split(":")[2].split("@")[0]
    assert secret not in str(caught.value)
    assert secret[:3] not in str(caught.value)


async def test_version_3_schema_keeps_its_state_and_gains_run_records(
    database: PgDatabase, schema: str
) -> None:
    """A schema of the version before run records (3) keeps its task state when opened,
    and can record runs afterwards."""

    async def old(conn: Any) -> None:
        await conn.execute(
            f'INSERT INTO "{schema}".task_state VALUES '
            "('d', 'r', 't', -1, 'k', '7', '\\x00', 1.0, NULL, 2)"
        )

    await old_schema(database, schema, 3, old)
    async with PostgresStore(database.dsn, schema=schema) as store:
        results = await store.execute(
            [
                ops.Get(TaskScope("d", "r", "t", -1), "k"),
                ops.RecordRun("d", "r", "success", 1.0, 2.0),
                ops.ListRuns(),
            ],
            now=2.0,
        )
    assert results[:2] == [7, None]
    assert [(r.dag_id, r.run_id, r.state) for r in results[2]] == [("d", "r", "success")]
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert SCHEMA_VERSION == 8


async def test_version_4_schema_keeps_its_state_and_records_and_gains_leases(
    database: PgDatabase, schema: str
) -> None:
    """A schema of the version before leases (4) keeps its state and run records; an
    instance it left `running` is taken at once as the next try, the old attempt
    recorded abandoned."""

    s = f'"{schema}"'

    async def old(conn: Any) -> None:
        await conn.execute(
            f"INSERT INTO {s}.task_state VALUES "
            "('d', 'r', 't', -1, 'k', '7', '\\x00', 1.0, NULL, 1)"
        )
        await conn.execute(f"INSERT INTO {s}.dag_run VALUES ('d', 'r', 'running', 1.0, NULL)")
        await conn.execute(
            f"INSERT INTO {s}.task_instance VALUES ('d', 'r', 't', -1, 'running', 1, 1.0, NULL)"
        )
        await conn.execute(
            f"INSERT INTO {s}.task_attempt VALUES ('d', 'r', 't', -1, 1, 'running', 1.0, "
            "NULL, NULL, NULL, NULL, '{}', NULL, true, 'old-host', 9, NULL)"
        )

    await old_schema(database, schema, 4, old)
    start = AttemptRecord(0, "running", 2.0)
    async with PostgresStore(database.dsn, schema=schema) as store:
        value, acquired, run = await store.execute(
            [
                ops.Get(TaskScope("d", "r", "t", -1), "k"),
                ops.AcquireLease("d", "r", "t", -1, "rt", 30.0, 1, start),
                ops.GetRun("d", "r"),
            ],
            now=2.0,
        )
    assert (value, acquired.outcome, acquired.try_number) == (7, "acquired", 2)
    (ti,) = run.instances
    assert [(a.try_number, a.state, a.host) for a in ti.attempts] == [
        (1, "abandoned", "old-host"), (2, "running", None),
    ]  # fmt: skip
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_version_6_schema_keeps_its_records_and_gains_run_graphs(
    database: PgDatabase, schema: str
) -> None:
    """A schema of the version before run graphs (6) keeps its run records and asset
    events: an old run has an empty graph, a new record keeps one."""

    s = f'"{schema}"'

    async def old(conn: Any) -> None:
        await conn.execute(f"INSERT INTO {s}.dag_run VALUES ('d', 'r', 'success', 1.0, 2.0)")
        await conn.execute(
            f"INSERT INTO {s}.task_instance VALUES ('d', 'r', 't', -1, 'success', 1, 1.0, "
            "2.0, NULL, NULL, NULL)"
        )
        await conn.execute(
            f"INSERT INTO {s}.asset OVERRIDING SYSTEM VALUE VALUES (3, 'orders', 's3://o', 1.0)"
        )
        await conn.execute(
            f"INSERT INTO {s}.asset_event (asset_id, alias_name, extra, dag_id, run_id, "
            "task_id, map_index, try_number, timestamp) "
            """VALUES (3, NULL, '{"n":1}', 'd', 'r', 't', -1, 1, 1.5)"""
        )

    await old_schema(database, schema, 6, old)
    graph = (TaskNode("t"),)
    async with PostgresStore(database.dsn, schema=schema) as store:
        old_run, events, _, new = await store.execute(
            [
                ops.GetRun("d", "r"),
                ops.ListAssetEvents(AssetScope(name="orders")),
                ops.RecordRun("d", "r2", "running", 3.0, graph=graph),
                ops.GetRun("d", "r2"),
            ],
            now=3.0,
        )
    assert (old_run.state, old_run.graph) == ("success", ())
    assert [i.task_id for i in old_run.instances] == ["t"]
    assert [(e.run_id, e.extra) for e in events] == [("r", {"n": 1})]
    assert new.graph == graph
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_version_7_schema_keeps_its_history_and_numbers_on_from_it(
    database: PgDatabase, schema: str
) -> None:
    """A schema of the version before state rows carry their version (7), with task and
    asset state and their history as that version wrote them, keeps both when opened,
    and each key's next versions (a lone put, a put in a batch) are numbered on from
    its newest, the oldest cut at the bound."""
    by = '{"kind":"test"}'

    s = f'"{schema}"'

    async def old(conn: Any) -> None:
        await conn.execute(
            f"INSERT INTO {s}.task_state VALUES ('d', 'r', 't', -1, 'k', '3', "
            "sha256('3'), 3.0, NULL, 1, '')"
        )
        await conn.execute(
            f"INSERT INTO {s}.asset OVERRIDING SYSTEM VALUE VALUES (3, 'orders', 's3://o', 1.0)"
        )
        await conn.execute(
            f"INSERT INTO {s}.asset_state (asset_id, key, value, value_digest, updated_at) "
            "VALUES (3, 'k', '2', sha256('2'), 2.0)"
        )
        for version in (1, 2, 3):
            await conn.execute(
                f"INSERT INTO {s}.task_state_history VALUES ('d', 'r', 't', '', 'k', $1, "
                "$1::integer::text, $1::integer::float8, $2)",
                version, by,
            )  # fmt: skip
        for version in (1, 2):
            await conn.execute(
                f"INSERT INTO {s}.asset_state_history VALUES (3, 'k', $1, $1::integer::text, "
                "$1::integer::float8, $2)",
                version, by,
            )  # fmt: skip

    await old_schema(database, schema, 7, old)
    orders = AssetScope(name="orders")
    async with PostgresStore(database.dsn, schema=schema) as store:
        store.history = 3
        before = await store.execute([ops.History(T, "k"), ops.History(orders, "k")], now=4.0)
        await one(store, put(T, "k", "4"))
        await one(store, ops.Put(orders, "k", "3", None, None))
        await store.execute([put(T, "k", "5"), put(T, "j", "1")], now=5.0)
        await one(store, put(T, "k", "6"))
        after = await store.execute([ops.History(T, "k"), ops.History(orders, "k")], now=6.0)
    assert [(v.version, v.value, v.updated_by.kind) for v in before[0]] == [
        (3, 3, "test"), (2, 2, "test"), (1, 1, "test"),
    ]  # fmt: skip
    assert [(v.version, v.value) for v in before[1]] == [(2, 2), (1, 1)]
    assert [(v.version, v.value) for v in after[0]] == [(6, 6), (5, 5), (4, 4)]
    assert [(v.version, v.value) for v in after[1]] == [(3, 3), (2, 2), (1, 1)]
    rows = await sql(database.dsn, f'SELECT version FROM "{schema}".schema_version ORDER BY 1')
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
