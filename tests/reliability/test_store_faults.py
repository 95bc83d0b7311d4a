"""Store faults: a read-only file, a full database, a lock held past the busy timeout, a
corrupt or foreign file. Each gives the calling task a clear error (it fails, or retries
under its policy), the other tasks of the run go on, and the runtime closes cleanly."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from stateward import (
    Asset,
    Dag,
    NotAStatewardDatabaseError,
    SqliteStore,
    StoreError,
    open_runtime,
)
from stateward._runtime.runner import TaskInstanceEvent
from stateward.store import base as ops

from ._support import Child, threads_left_over

ORDERS = Asset("orders", "s3://lake/orders")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def seed(db: Path) -> None:
    """A stateward database with task state (spanning pages) and a watermark, kept both
    as asset state and as the ``reader`` task's state."""
    async with open_runtime(db) as rt:
        state = rt.state.task("faults", "seed", "loader")
        for i in range(200):
            await state.aset(f"k{i:03}", "x" * 50)
        await rt.state.asset(ORDERS).aset("watermark", 41)
        await rt.state.task("faults", "r", "reader").aset("watermark", 41)


def new_asset_dag() -> Dag:
    """A Dag declaring an asset the store does not know yet."""
    dag = Dag("fresh_asset")
    dag.task(task_id="t", outlets=[Asset("fresh", uri="s3://fresh")])(lambda: None)
    return dag


def fault_dag(log: list[str], *, retries: int = 0, big: bool = False, assets: bool = True) -> Dag:
    """``loader`` writes (the write the fault hits); ``reader`` on another path reads the
    watermark (as asset state, or as its task state); ``publish`` depends on ``loader``."""
    dag = Dag("faults", default_args={"retry_delay": 0})

    @dag.task(retries=retries)
    def loader(task_state: Any, ti: Any) -> str:
        log.append(f"loader try {ti.try_number}")
        task_state.set("payload", "y" * 60_000 if big else "job-1")
        return "loaded"

    if assets:

        @dag.task(inlets=[ORDERS])
        async def reader(asset_state: Any) -> Any:
            return await asset_state.aget("watermark")

    else:

        @dag.task
        async def reader(task_state: Any) -> Any:
            return await task_state.aget("watermark")

    @dag.task
    def publish() -> str:
        return "published"

    loader >> publish
    return dag


class ReadOnlyFileStore(SqliteStore):
    """Opens the database file read-only (``mode=ro``), as SQLite does by itself when the
    process may not write the file. chmod cannot show this: the tests run as root."""

    def _connect(self) -> sqlite3.Connection:
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
        )


class FillingStore(SqliteStore):
    """A database that may grow by only a few pages (``PRAGMA max_page_count`` on the
    writer connection): a full disk. ``make_room()`` lifts the limit before the next write."""

    def __init__(self, path: Path, *, spare_pages: int) -> None:
        super().__init__(path)
        self.spare_pages = spare_pages
        self._room: int | None = None

    def _open_sync(self) -> Any:
        writer, reader = super()._open_sync()
        pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
        writer.conn.execute(f"PRAGMA max_page_count = {pages + self.spare_pages}")
        return writer, reader

    def make_room(self) -> None:
        self._room = 1 << 30

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        if self._room is not None and self._writer is not None:
            pragma, self._room = f"PRAGMA max_page_count = {self._room}", None
            await self._in_writer(self._writer.conn.execute, pragma)
        return await super().execute(batch, now=now)


async def test_read_only_file_fails_writes_clearly_and_serves_reads(tmp_path: Path) -> None:
    """A read-only file: writes fail clearly, reads on another path work, file unchanged."""
    db = tmp_path / "state.db"
    await seed(db)
    before = digest(db)
    threads = set(threading.enumerate())
    log: list[str] = []
    async with open_runtime(store=ReadOnlyFileStore(db)) as rt:
        result = await rt.run_dag(fault_dag(log, retries=1), run_id="r")
    loader = result.ti("loader")
    assert (loader.state, loader.try_number) == ("failed", 2)
    assert isinstance(loader.error, StoreError)
    assert str(loader.error) == (
        f"SQLite store {str(db)!r} failed: attempt to write a readonly database "
        "(the file or its folder is read-only; make it writable)"
    )
    assert result.ti("reader").result == 41
    assert result.ti("publish").state == "upstream_failed"
    assert digest(db) == before
    assert threads_left_over(threads) == []
    async with open_runtime(db) as rt:
        assert await rt.state.task("faults", "r", "loader").aget("payload") is None


async def test_full_database_fails_the_write_then_a_retry_succeeds(tmp_path: Path) -> None:
    """A full database fails the write clearly; other writes go on; the retry succeeds."""
    db = tmp_path / "state.db"
    await seed(db)
    store = FillingStore(db, spare_pages=3)
    log: list[str] = []

    def on_event(event: TaskInstanceEvent) -> None:
        if event.state == "up_for_retry":
            log.append(f"{event.task_id} up for retry")
            store.make_room()

    dag = fault_dag(log, retries=2, big=True)

    @dag.task
    def small_writer(task_state: Any) -> int:
        for i in range(20):
            task_state.set(f"small-{i}", i)
        return task_state.increment("done")

    threads = set(threading.enumerate())
    async with open_runtime(store=store) as rt:
        result = await rt.run_dag(dag, run_id="r", on_event=on_event)
    loader = result.ti("loader")
    assert (loader.state, loader.try_number) == ("success", 2)
    first_error = loader.attempts[0].error
    assert isinstance(first_error, StoreError)
    assert str(first_error) == (
        f"SQLite store {str(db)!r} failed: database or disk is full "
        "(the disk (or the database's max_page_count) is full; free space)"
    )
    assert log == ["loader try 1", "loader up for retry", "loader try 2"]
    assert result.ti("small_writer").result == 1
    assert result.ti("reader").result == 41
    assert result.ti("publish").state == "success"
    assert threads_left_over(threads) == []
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


async def test_lock_held_by_another_process_fails_then_retry_succeeds(tmp_path: Path) -> None:
    """A lock held past busy_timeout fails the write clearly; the retry after release works."""
    db = tmp_path / "state.db"
    await seed(db)
    holder = Child("lock_child.py", str(db), stderr_path=tmp_path / "holder.err")
    try:
        assert holder.readline() == "locked"
        log: list[str] = []

        def on_event(event: TaskInstanceEvent) -> None:
            if event.state == "up_for_retry":
                holder.send("release")
                log.append(holder.readline())

        threads = set(threading.enumerate())
        async with open_runtime(db, busy_timeout=0.1) as rt:
            # Registering a new asset is a write: while the lock is held, a run that
            # declares one fails at its start with the same clear StoreError...
            with pytest.raises(StoreError, match=r"database is locked \(another process"):
                await rt.run_dag(new_asset_dag(), run_id="new-asset")
            # ...while a run whose assets are all known starts, and its tasks retry.
            dag = fault_dag(log, retries=3)
            result = await rt.run_dag(dag, run_id="r", on_event=on_event)
            assert (await rt.run_dag(new_asset_dag(), run_id="new-asset")).state == "success"
        assert threads_left_over(threads) == []
    finally:
        holder.close()
    loader = result.ti("loader")
    assert (loader.state, loader.try_number, loader.result) == ("success", 2, "loaded")
    assert str(loader.attempts[0].error) == (
        f"SQLite store {str(db)!r} failed: database is locked "
        "(another process holds the write lock; retry, or raise busy_timeout)"
    )
    assert log == ["loader try 1", "released", "loader try 2"]
    assert result.ti("reader").result == 41
    assert result.ti("publish").result == "published"


async def test_corrupt_pages_fail_only_the_tasks_that_touch_them(tmp_path: Path) -> None:
    """Corrupt task-state pages fail only the tasks touching them, with a clear message."""
    db = tmp_path / "state.db"
    await seed(db)
    conn = sqlite3.connect(db)
    roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master"))
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as f:
        f.seek((roots["task_state"] - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    log: list[str] = []
    threads = set(threading.enumerate())
    async with open_runtime(db) as rt:
        result = await rt.run_dag(fault_dag(log, retries=1), run_id="r")
        assert await rt.state.asset(ORDERS).aincrement("runs") == 1
    assert threads_left_over(threads) == []
    loader = result.ti("loader")
    assert (loader.state, loader.try_number) == ("failed", 2)
    assert str(loader.error) == (
        f"SQLite store {str(db)!r} failed: database disk image is malformed "
        "(the file is corrupt; restore it from a backup)"
    )
    assert result.ti("reader").result == 41


def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def other_application_id(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()


async def truncated_stateward(path: Path) -> None:
    """The first two pages of a real stateward database, as a copy cut short leaves it."""
    whole = path.with_name("whole.db")
    await seed(whole)
    copy_head(whole, path, 8192)


def copy_head(source: Path, target: Path, size: int) -> None:
    target.write_bytes(source.read_bytes()[:size])


FOREIGN = {
    "text": (
        lambda p: p.write_text("my notes\n" * 500),
        r"is not a stateward database \(file is not a database\); point --db / db= at a new file",
    ),
    "binary": (
        lambda p: p.write_bytes(bytes(range(256)) * 40),
        r"is not a stateward database \(file is not a database\)",
    ),
    "sqlite-of-another-app": (
        foreign_sqlite,
        r"is an SQLite database of another application \(application_id 0x0, tables: customers\); stateward leaves it untouched",
    ),
    "other-application-id": (
        other_application_id,
        r"is an SQLite database of another application \(application_id 0x4d2, tables: none\)",
    ),
    "truncated-stateward": (
        None,
        r"is a damaged SQLite database \(database disk image is malformed\); stateward leaves it untouched. Restore it from a backup",
    ),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
async def test_a_file_that_is_not_a_stateward_database_is_refused_untouched(
    tmp_path: Path, kind: str
) -> None:
    """A foreign, garbage or damaged file is refused with a clear message, unmodified."""
    path = tmp_path / "given.db"
    make, message = FOREIGN[kind]
    if make is None:
        await truncated_stateward(path)
    else:
        make(path)
    before = digest(path)
    with pytest.raises(NotAStatewardDatabaseError, match=rf"^{str(path)!r} {message}"):
        async with open_runtime(path):
            pytest.fail("the runtime opened")
    assert digest(path) == before
    assert not path.with_name("given.db-wal").exists()
    assert not path.with_name("given.db-shm").exists()


async def test_a_runtime_that_cannot_open_leaves_no_thread(tmp_path: Path) -> None:
    """A refused open stops the store's writer thread: nothing is left running."""
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 200)
    threads = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(NotAStatewardDatabaseError):
            async with open_runtime(path):
                pass
    await trio.lowlevel.checkpoint()
    assert threads_left_over(threads) == []
