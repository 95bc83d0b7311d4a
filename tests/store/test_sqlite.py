"""SqliteStore specifics: durability settings, schema versions, files it must not touch."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stateward import NotAStatewardDatabaseError, SqliteStore, StoreError, open_runtime
from stateward._records import AssetInfo, AttemptRecord, TaskNode
from stateward.store import base as ops
from stateward.store.base import AssetScope, TaskScope
from stateward.store.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION, current_version, migrate
from stateward.store.sqlite.store import JOURNAL_SIZE_LIMIT, WAL_CHECK_EVERY

T = TaskScope("d", "r", "t", -1)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_defaults_are_wal_and_synchronous_full(tmp_path: Path) -> None:
    """A new database uses WAL, synchronous=FULL, a busy timeout, a WAL size limit and
    the schema marks."""
    async with SqliteStore(tmp_path / "s.db") as store:
        pragmas = await store.pragmas()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 5000,
        "application_id": APPLICATION_ID,
        "journal_size_limit": JOURNAL_SIZE_LIMIT,
        "schema_version": SCHEMA_VERSION,
    }


async def test_synchronous_and_busy_timeout_are_configurable(tmp_path: Path) -> None:
    """synchronous and busy_timeout follow the constructor."""
    async with SqliteStore(tmp_path / "s.db", synchronous="normal", busy_timeout=0.25) as store:
        pragmas = await store.pragmas()
    assert (pragmas["synchronous"], pragmas["busy_timeout"]) == (1, 250)


def test_bad_settings_are_refused() -> None:
    """An unknown synchronous mode or a negative timeout is a clear ValueError."""
    with pytest.raises(
        ValueError, match=r"synchronous must be one of OFF, NORMAL, FULL, EXTRA, got 'fast'"
    ):
        SqliteStore("x.db", synchronous="fast")
    with pytest.raises(ValueError, match=r"busy_timeout must be >= 0 seconds, got -1"):
        SqliteStore("x.db", busy_timeout=-1)


async def test_state_survives_reopening(tmp_path: Path) -> None:
    """What one store wrote, the next one on the same file reads."""
    async with SqliteStore(tmp_path / "s.db") as store:
        await store.execute([ops.Put(T, "k", '"v"', None, None)], now=1.0)
    async with SqliteStore(tmp_path / "s.db") as store:
        assert await store.execute([ops.Get(T, "k")], now=2.0) == ["v"]


async def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    """Opening a schema-1 file migrates it to the current version, keeping its rows."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), to_version=1)
    conn.execute(
        "INSERT INTO task_state VALUES ('d', 'r', 't', -1, 'job_id', '\"J-7\"', 1.0, NULL)"
    )
    conn.close()
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION
        entries = (await store.execute([ops.ListEntries()], now=2.0))[0]
    assert [(e.key, e.value, e.writer) for e in entries] == [("job_id", "J-7", None)]
    versions = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_schema_2_file_with_assets_is_migrated(tmp_path: Path) -> None:
    """A schema-2 file keeps its assets (ids, bindings, state, aliases) after the
    migration that lets a one-sided asset leave the other side unbound."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), to_version=2)
    conn.execute("INSERT INTO asset VALUES (7, 'orders', 's3://orders', 1.0)")
    conn.execute(
        "INSERT INTO asset_state VALUES (7, 'w', '5', 1.0, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    conn.execute("INSERT INTO asset_alias VALUES ('daily', 7, 1.0)")
    conn.close()
    orders = AssetInfo("orders", "s3://orders")
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION
        results = await store.execute(
            [
                ops.Get(AssetScope(uri="s3://orders"), "w"),
                ops.ResolveAlias("daily"),
                ops.Put(AssetScope(name="later"), "k", "1", None, None),
                ops.RegisterAssets((AssetInfo("later", "s3://later"),)),
            ],
            now=2.0,
        )
        assert results == [5, (orders,), None, None]
        found = await store.execute([ops.LookupAsset(uri="s3://later")], now=2.0)
        assert found == [AssetInfo("later", "s3://later")]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer stateward is not opened."""
    path = tmp_path / "new.db"
    async with SqliteStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(NotAStatewardDatabaseError, match=r"schema version 99, newer than"):
        async with SqliteStore(path):
            pass


async def test_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """An SQLite database of another application is refused, byte for byte unchanged."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(
        NotAStatewardDatabaseError,
        match=r"is an SQLite database of another application .*tables: customers.*untouched",
    ):
        async with SqliteStore(path):
            pass
    assert digest(path) == before
    assert not (tmp_path / "other.db-wal").exists()


async def test_non_database_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A text file given as the database is refused with a clear message, unchanged."""
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    before = digest(path)
    with pytest.raises(NotAStatewardDatabaseError, match=r"notes.txt' is not a stateward database"):
        async with SqliteStore(path):
            pass
    assert digest(path) == before


def test_a_migration_committing_between_the_mark_reads_is_not_taken_for_foreign(
    tmp_path: Path,
) -> None:
    """Another opener's first migration, run while this opener reads the file's mark,
    is either wholly seen or not at all: never an id of 0 beside stateward's tables."""
    path = tmp_path / "new.db"
    reader = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    attempts: list[str] = []

    def migrate_between_the_reads(statement: str) -> None:
        if "sqlite_master" in statement and not attempts:
            try:
                migrate(other, str(path))
                attempts.append("committed")
            except sqlite3.OperationalError as exc:  # the reader's snapshot holds it off
                attempts.append(str(exc))

    reader.set_trace_callback(migrate_between_the_reads)
    try:
        assert current_version(reader, str(path)) is None  # the file as it was: empty
    finally:
        reader.set_trace_callback(None)
        reader.close()
        other.close()
    assert attempts == ["database is locked"]


async def test_empty_file_is_initialised(tmp_path: Path) -> None:
    """An empty file (e.g. from touch) becomes a stateward database."""
    path = tmp_path / "empty.db"
    path.touch()
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION


async def test_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    """A path in a folder that does not exist fails with what to check."""
    with pytest.raises(StoreError, match=r"unable to open database file .*folder exists"):
        async with SqliteStore(tmp_path / "no" / "such" / "s.db"):
            pass


async def test_lock_held_past_busy_timeout_fails_the_batch_cleanly(tmp_path: Path) -> None:
    """A write that cannot get the lock in time raises StoreError and writes nothing."""
    path = tmp_path / "s.db"
    async with SqliteStore(path, busy_timeout=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match=r"database is locked .*another process holds"):
                await store.execute([ops.Put(T, "k", "1", None, None)], now=1.0)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.execute([ops.Get(T, "k")], now=1.0) == [None]
        await store.execute([ops.Put(T, "k", "2", None, None)], now=1.0)
        assert await store.execute([ops.Get(T, "k")], now=1.0) == [2]


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    """execute() on a closed store says so."""
    store = SqliteStore(tmp_path / "s.db")
    async with store:
        pass
    with pytest.raises(RuntimeError, match=r"is not open"):
        await store.execute([ops.Get(T, "k")], now=1.0)


async def test_a_second_process_write_is_seen_at_once(tmp_path: Path) -> None:
    """Reads are never served from a cache: another process's committed write shows."""
    import subprocess
    import sys

    path = tmp_path / "shared.db"
    child = (
        "import sys, trio\n"
        "from stateward import open_runtime\n"
        "async def main():\n"
        "    async with open_runtime(sys.argv[1]) as rt:\n"
        "        await rt.state.task('d', 'r', 't').aset('k', sys.argv[2])\n"
        "        await rt.state.asset(name='new-asset').aset('w', 1)\n"
        "trio.run(main)\n"
    )
    from stateward import open_runtime

    async with open_runtime(path) as rt:
        state = rt.state.task("d", "r", "t")
        await state.aset("k", "mine")
        assert await state.aget("k") == "mine"
        for value in ("theirs-1", "theirs-2"):
            subprocess.run([sys.executable, "-c", child, str(path), value], check=True)  # noqa: ASYNC221
            assert await state.aget("k") == value
        assert await rt.state.asset(name="new-asset").aget("w") == 1


async def test_busy_reader_falls_back_to_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If SQLite answers busy to the inline reader, the writer connection serves the read."""
    async with SqliteStore(tmp_path / "s.db") as store:
        await store.execute([ops.Put(T, "k", "1", None, None)], now=1.0)
        reader = store._reader
        assert reader is not None

        def busy(batch: object, now: float, writes: bool) -> list[object]:
            cause = sqlite3.OperationalError("database is locked")
            raise StoreError("locked") from cause

        monkeypatch.setattr(reader, "run", busy)
        assert await store.execute([ops.Get(T, "k")], now=1.0) == [1]
        assert store.reader_fallbacks == 1

        def broken(batch: object, now: float, writes: bool) -> list[object]:
            cause = sqlite3.DatabaseError("database disk image is malformed")
            raise StoreError("malformed") from cause

        monkeypatch.setattr(reader, "run", broken)
        with pytest.raises(StoreError, match="malformed"):
            await store.execute([ops.Get(T, "k")], now=1.0)
        assert store.reader_fallbacks == 1


async def test_unexpected_error_mid_batch_rolls_back_and_releases_the_lock(tmp_path: Path) -> None:
    """A non-SQLite error inside a batch (here an operation it does not know) undoes the
    batch and keeps no lock. (A corrupt stored value is not one: it refuses its reads.)"""
    path = tmp_path / "s.db"
    async with SqliteStore(path) as store:
        await store.execute([ops.Put(T, "good", "1", None, None)], now=1.0)
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("UPDATE task_state SET value = '{not json' WHERE key = 'good'")
        unknown: Any = object()
        with pytest.raises(TypeError, match=r"SqliteStore cannot execute object"):
            await store.execute([ops.Put(T, "new", "2", None, None), unknown], now=1.0)
        (refused,) = await store.execute([ops.Get(T, "good")], now=1.0)
        assert str(refused).startswith("the value stored under key 'good' cannot be read")
        raw.execute("BEGIN IMMEDIATE")  # the store left no write lock behind
        raw.execute("ROLLBACK")
        raw.close()
        assert await store.execute([ops.Get(T, "new")], now=1.0) == [None]


async def test_the_wal_shrinks_after_a_long_outside_reader_goes(tmp_path: Path) -> None:
    """A -wal file that grew past the limit while another connection held a snapshot
    is cut back once that reader is gone, and emptied when the store closes."""
    path = tmp_path / "s.db"
    wal = tmp_path / "s.db-wal"
    big = '"' + "x" * 60_000 + '"'
    async with SqliteStore(path, synchronous="OFF") as store:
        await store.execute([ops.Put(T, "seed", "1", None, None)], now=1.0)
        outside = sqlite3.connect(path, isolation_level=None)
        outside.execute("BEGIN")
        seen = set()
        for i in range(2 * JOURNAL_SIZE_LIMIT // 60_000):
            await store.execute([ops.Put(T, f"k{i}", big, None, None)], now=1.0)
            # A long reader: it reads on, from the snapshot of its first read.
            seen.add(outside.execute("SELECT COUNT(*) FROM task_state").fetchall()[0][0])
        assert seen == {2}
        assert wal.stat().st_size > JOURNAL_SIZE_LIMIT
        outside.execute("COMMIT")
        for _ in range(WAL_CHECK_EVERY):
            await store.execute([ops.Put(T, "k", "1", None, None)], now=1.0)
        assert wal.stat().st_size <= JOURNAL_SIZE_LIMIT
    assert wal.stat().st_size == 0  # the outside connection is still open
    outside.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_writes_to_a_database_file_deleted_or_replaced_are_refused(
    tmp_path: Path, how: str
) -> None:
    """A file deleted or replaced under a running runtime fails writes with StoreError
    instead of acknowledging writes that would be lost; reads still answer."""
    path = tmp_path / "s.db"
    async with open_runtime(path) as rt:
        state = rt.state.task("d", "r", "t")
        await state.aset("k", 1)
        if how == "deleted":
            path.unlink()
        else:
            other = tmp_path / "other.db"
            sqlite3.connect(other).close()
            os.replace(other, path)
        with pytest.raises(
            StoreError,
            match=rf"s.db' failed: the database file was {how}.* while this runtime had "
            r"it open \(nothing was written; .* restart the runtime",
        ):
            await state.aset("k", 2)


async def test_schema_3_file_keeps_its_state_and_gains_run_records(tmp_path: Path) -> None:
    """A file of the schema before run records (3) keeps its task and asset state when
    opened, and can record runs afterwards."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), to_version=3)
    conn.execute("INSERT INTO task_state VALUES ('d', 'r', 't', -1, 'k', '7', 1.0, NULL, 2)")
    conn.execute("INSERT INTO asset VALUES (3, 'orders', NULL, 1.0)")
    conn.execute(
        "INSERT INTO asset_state VALUES (3, 'w', '5', 1.0, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    conn.close()
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION == 7
        results = await store.execute(
            [
                ops.Get(T, "k"),
                ops.Get(AssetScope(name="orders"), "w"),
                ops.RecordRun("d", "r", "success", 1.0, 2.0),
                ops.ListRuns(),
            ],
            now=2.0,
        )
    assert results[:3] == [7, 5, None]
    assert [(r.dag_id, r.run_id, r.state) for r in results[3]] == [("d", "r", "success")]


async def test_schema_4_file_keeps_its_state_and_records_and_gains_history_and_leases(
    tmp_path: Path,
) -> None:
    """A file of the schema before leases (4) keeps its state and run records when
    opened; an instance it left `running` has no lease, so the next acquisition takes
    it at once as the next try and records the old attempt abandoned."""
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), to_version=4)
    conn.execute("INSERT INTO task_state VALUES ('d', 'r', 't', -1, 'k', '7', 1.0, NULL, 1)")
    conn.execute("INSERT INTO dag_run VALUES ('d', 'r', 'running', 1.0, NULL)")
    conn.execute("INSERT INTO task_instance VALUES ('d', 'r', 't', -1, 'running', 1, 1.0, NULL)")
    conn.execute(
        "INSERT INTO task_attempt VALUES ('d', 'r', 't', -1, 1, 'running', 1.0, NULL, NULL, "
        "NULL, NULL, '{}', NULL, 1, 'old-host', 9, NULL)"
    )
    conn.close()
    start = AttemptRecord(0, "running", 2.0)
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION == 7
        value, acquired, run = await store.execute(
            [
                ops.Get(T, "k"),
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


async def test_schema_6_file_keeps_its_records_and_gains_run_graphs(tmp_path: Path) -> None:
    """A file of the schema before run graphs (6) keeps its run records and asset events
    when opened: an old run has an empty graph (the UI draws its waves), a new record
    keeps one, and the old events read back."""
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), to_version=6)
    conn.execute("INSERT INTO dag_run VALUES ('d', 'r', 'success', 1.0, 2.0)")
    conn.execute(
        "INSERT INTO task_instance VALUES ('d', 'r', 't', -1, 'success', 1, 1.0, 2.0, "
        "NULL, NULL, NULL)"
    )
    conn.execute("INSERT INTO asset VALUES (3, 'orders', 's3://o', 1.0)")
    conn.execute(
        "INSERT INTO asset_event VALUES (1, 3, NULL, '{\"n\":1}', 'd', 'r', 't', -1, 1, 1.5)"
    )
    conn.close()
    graph = (TaskNode("t"),)
    async with SqliteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION == 7
        old, events, _, new = await store.execute(
            [
                ops.GetRun("d", "r"),
                ops.ListAssetEvents(AssetScope(name="orders")),
                ops.RecordRun("d", "r2", "running", 3.0, graph=graph),
                ops.GetRun("d", "r2"),
            ],
            now=3.0,
        )
    assert (old.state, old.graph, [i.task_id for i in old.instances]) == ("success", (), ["t"])
    assert [(e.run_id, e.extra) for e in events] == [("r", {"n": 1})]
    assert new.graph == graph


async def test_a_takeover_by_another_connection_fences_the_next_write(tmp_path: Path) -> None:
    """The writer remembers a lease it found held only while no other connection
    commits: a takeover committed by another store on the file refuses the next write."""
    from stateward import StaleAttemptError
    from stateward._records import Lease

    path = tmp_path / "s.db"
    scope = TaskScope("d", "r", "t", -1)
    start = AttemptRecord(0, "running", 1.0)

    def acquire(holder: str, timeout: float) -> ops.AcquireLease:
        return ops.AcquireLease("d", "r", "t", -1, holder, timeout, 0, start)

    def put(key: str) -> ops.Fenced:
        return ops.Fenced(Lease("d", "r", "t", -1, "A", 1), ops.Put(scope, key, "1", None, None))

    async with SqliteStore(path) as mine, SqliteStore(path) as theirs:
        await mine.execute([acquire("A", -1.0)], now=1.0)
        assert await mine.execute([put("a")], now=1.0) == [None]
        (got,) = await theirs.execute([acquire("B", 60.0)], now=2.0)
        assert (got.outcome, got.try_number) == ("acquired", 2)
        (late,) = await mine.execute([put("b")], now=3.0)
        assert isinstance(late, StaleAttemptError)
        assert await mine.execute([ops.Items(scope)], now=3.0) == [{"a": 1}]


async def test_versions_stay_consecutive_when_another_connection_writes_the_key(
    tmp_path: Path,
) -> None:
    """Two stores on one file writing one key in turn: every change is the next
    version, the newest ``history`` are kept, each with the value it wrote."""
    path = tmp_path / "s.db"
    async with SqliteStore(path, history=3) as one, SqliteStore(path, history=3) as two:
        for n in range(1, 9):
            store = one if n % 3 else two
            await store.execute([ops.Put(T, "k", str(n), None, None)], now=float(n))
        for store in (one, two):
            (history,) = await store.execute([ops.History(T, "k")], now=9.0)
            assert [(v.version, v.value) for v in history] == [(8, 8), (7, 7), (6, 6)]


async def test_a_batch_rolled_back_leaves_no_version_behind(tmp_path: Path) -> None:
    """A version written by a batch that failed is forgotten with it: the next change
    is that version again, and the history has no gap."""
    path = tmp_path / "s.db"
    async with SqliteStore(path, history=3) as store:
        for n in (1, 2):
            await store.execute([ops.Put(T, "k", str(n), None, None)], now=float(n))
        # An asset with neither name nor URI breaks a constraint: SQLite fails the batch.
        nameless = ops.Put(AssetScope(None, None), "k", "1", None, None)
        with pytest.raises(StoreError, match="CHECK constraint failed"):
            await store.execute([ops.Put(T, "k", "lost", None, None), nameless], now=3.0)
        await store.execute([ops.Put(T, "k", "3", None, None)], now=4.0)
        (history,) = await store.execute([ops.History(T, "k")], now=5.0)
        assert [(v.version, v.value) for v in history] == [(3, 3), (2, 2), (1, 1)]


async def test_an_item_adopting_a_positions_versions_restarts_that_positions_ring(
    tmp_path: Path,
) -> None:
    """An expansion whose item adopts the state its position kept moves the position's
    versions: a later write keyed by that position numbers its key from 1 again, as a
    store opened afresh would, not after the versions the writer remembered."""
    by_index = TaskScope("d", "r", "t", 3)  # the item standing at index 3: its position
    position = TaskScope("d", "r", "t", 3, item="#3")
    adopter = TaskScope("d", "r", "t", 3, item="x")
    async with SqliteStore(tmp_path / "s.db") as store:
        for value in ("1", "2"):
            await store.execute([ops.Put(by_index, "k", value, None, None)], now=1.0)
        await store.execute([ops.RecordItems("d", "r", "t", ((3, "x", None),))], now=3.0)
        await store.execute([ops.Put(position, "k", "3", None, None)], now=4.0)
        versions, adopted = await store.execute(
            [ops.History(position, "k"), ops.History(adopter, "k")], now=5.0
        )
    assert [(v.version, v.value) for v in versions] == [(1, 3)]
    assert [(v.version, v.value) for v in adopted] == [(2, 2), (1, 1)]
