"""Shared helpers for the benchmarks: the raw baselines (sqlite3, asyncpg), the store
a ``--db`` option names, and JSON output."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stateward import Runtime


def emit(name: str, **figures: Any) -> None:
    """Print the one JSON line a benchmark reports."""
    print(json.dumps({"bench": name, **figures}, sort_keys=False))
    sys.stdout.flush()


def tmp_db(name: str) -> Path:
    """A fresh database path in a temporary folder (on the same disk as the baseline)."""
    folder = Path(tempfile.mkdtemp(prefix="stateward-bench-"))
    return folder / name


def per_op_ms(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1000


def raw_sqlite_baseline(n: int, synchronous: str = "FULL") -> dict[str, float]:
    """Raw sqlite3 with stateward's pragmas: upsert committed per write, batched, read."""
    path = tmp_db("raw.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE kv (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
        "updated_at REAL NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID"
    )
    upsert = (
        "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
        "value = excluded.value, updated_at = excluded.updated_at"
    )

    def commit_per_write() -> None:
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(upsert, ("s", f"k{i % 10}", json.dumps(i), time.time()))
            conn.execute("COMMIT")

    def batched() -> None:
        for start in range(0, n, 100):
            conn.execute("BEGIN IMMEDIATE")
            for i in range(start, min(n, start + 100)):
                conn.execute(upsert, ("s", f"k{i % 10}", json.dumps(i), time.time()))
            conn.execute("COMMIT")

    def reads() -> None:
        for i in range(n):
            row = conn.execute(
                "SELECT value FROM kv WHERE scope = ? AND key = ?", ("s", f"k{i % 10}")
            ).fetchone()
            json.loads(row[0])

    figures = {
        "raw_commit_per_write_ms": per_op_ms(n, commit_per_write),
        "raw_batched_100_ms": per_op_ms(n, batched),
        "raw_read_ms": per_op_ms(n, reads),
    }
    conn.close()
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0]}


# -- --db: a fresh SQLite file, or a throwaway schema in a PostgreSQL database --------------


def store_kind(db: str | None) -> str:
    """``"postgres"`` for a postgresql:// URL, else ``"sqlite"``."""
    postgres = db is not None and db.startswith(("postgresql://", "postgres://"))
    return "postgres" if postgres else "sqlite"


@asynccontextmanager
async def bench_runtime(db: str | None, name: str, **options: Any) -> AsyncIterator[Runtime]:
    """A runtime on a fresh SQLite file (``db`` None), the SQLite file ``db``, or a
    schema of its own in the PostgreSQL database ``db``, dropped afterwards (the bench
    never touches the database's ``stateward`` schema)."""
    from stateward import open_runtime

    if db is None:
        async with open_runtime(tmp_db(name), **options) as rt:
            yield rt
        return
    if store_kind(db) == "sqlite":
        async with open_runtime(db, **options) as rt:
            yield rt
        return
    from stateward.store.postgres import PostgresStore

    options.pop("synchronous", None)  # PostgreSQL: the server's synchronous_commit (on)
    schema = f"stateward_bench_{os.getpid()}"
    try:
        async with open_runtime(store=PostgresStore(db, schema=schema), **options) as rt:
            yield rt
    finally:
        drop_schema(db, schema)


def _run_asyncio(coro: Any) -> Any:
    # In a thread of its own: callers may be inside trio.run.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a benchmark's schema and everything in it."""

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    _run_asyncio(go())


def backends_cpu_s(dsn: str, since: float) -> float | None:
    """The CPU time so far of the server processes serving the connections stateward
    opened to ``dsn`` after ``since`` (epoch seconds), read from ``/proc`` (a server on
    this machine, Linux); None when they cannot be read."""

    async def go() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'stateward' "
                "AND datname = current_database() AND backend_start >= to_timestamp($1)",
                since,
            )
        finally:
            await conn.close()
        return [row[0] for row in rows]

    try:
        pids = _run_asyncio(go())
        return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids) / 1e9
    except (OSError, ValueError):
        return None


def postgres_answers(dsn: str) -> bool:
    """Whether a PostgreSQL server answers at ``dsn`` (and asyncpg is installed)."""

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    try:
        _run_asyncio(go())
    except Exception:
        return False
    return True


def raw_postgres_baseline(dsn: str, n: int) -> dict[str, float]:
    """Raw asyncpg from plain asyncio, the same upserts as the sqlite3 baseline: one
    committed statement per write (synchronous_commit on), 100 per transaction, a read."""
    schema = f"stateward_bench_raw_{os.getpid()}"

    async def go() -> dict[str, float]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        table = f'"{schema}".kv'
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f"CREATE TABLE {table} (scope text NOT NULL, key text NOT NULL, value text NOT NULL,"
            " updated_at double precision NOT NULL, PRIMARY KEY (scope, key))"
        )
        upsert = (
            f"INSERT INTO {table} VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO UPDATE "
            "SET value = excluded.value, updated_at = excluded.updated_at"
        )
        figures: dict[str, float] = {}
        try:
            start = time.perf_counter()
            for i in range(n):
                await conn.execute(upsert, "s", f"k{i % 10}", json.dumps(i), time.time())
            figures["raw_commit_per_write_ms"] = (time.perf_counter() - start) / n * 1000
            start = time.perf_counter()
            for first in range(0, n, 100):
                async with conn.transaction():
                    for i in range(first, min(n, first + 100)):
                        await conn.execute(upsert, "s", f"k{i % 10}", json.dumps(i), time.time())
            figures["raw_batched_100_ms"] = (time.perf_counter() - start) / n * 1000
            select = f"SELECT value FROM {table} WHERE scope = $1 AND key = $2"
            start = time.perf_counter()
            for i in range(n):
                json.loads(await conn.fetchval(select, "s", f"k{i % 10}"))
            figures["raw_read_ms"] = (time.perf_counter() - start) / n * 1000
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
        return figures

    result: dict[str, float] = _run_asyncio(go())
    return result
