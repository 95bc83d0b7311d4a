"""Per-operation cost of task state from a sync task and an async task, on a file DB.

Prints one JSON line: stateward's set/get (sync task, worker thread) and aset/aget
(async task), the raw sqlite3 baseline measured in the same run with the same pragmas
(WAL, synchronous=FULL, commit per write), and the ratios. With ``--db
postgresql://...`` it measures the PostgreSQL store (in a schema of its own, dropped
after) against raw asyncpg from plain asyncio, and against the same upsert sent through
trio-asyncio from trio (the floor of hosting asyncpg in trio). Usage::

    python bench/state_ops.py [--n 2000] [--synchronous FULL] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from typing import Any

import trio

from _common import (
    bench_runtime,
    drop_schema,
    emit,
    machine,
    raw_postgres_baseline,
    raw_sqlite_baseline,
    store_kind,
    tmp_db,
)
from stateward import Dag
from stateward.store.sqlite.store import _WriterThread


async def measure(n: int, synchronous: str, db: str | None = None) -> dict[str, float]:
    figures: dict[str, float] = {}
    # Each task in a Dag of its own, run by run_dag: the path of a real run, where every
    # write is fenced by the attempt's lease (run_task runs an instance without one).
    sync_dag, async_dag = Dag("bench_sync"), Dag("bench_async")

    @sync_dag.task
    def sync_ops(task_state: Any) -> None:
        start = time.perf_counter()
        for i in range(n):
            task_state.set(f"k{i % 10}", i)
        figures["sync_set_ms"] = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for i in range(n):
            task_state.get(f"k{i % 10}")
        figures["sync_get_ms"] = (time.perf_counter() - start) / n * 1000

    @async_dag.task
    async def async_ops(task_state: Any) -> None:
        start = time.perf_counter()
        for i in range(n):
            await task_state.aset(f"k{i % 10}", i)
        figures["async_aset_ms"] = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for i in range(n):
            await task_state.aget(f"k{i % 10}")
        figures["async_aget_ms"] = (time.perf_counter() - start) / n * 1000

    async with bench_runtime(db, "stateward.db", synchronous=synchronous) as rt:
        for dag in (sync_dag, async_dag):
            result = await rt.run_dag(dag, run_id="bench")
            (ti,) = result.task_instances
            if ti.error is not None:
                raise ti.error
    return figures


async def thread_floor(n: int, synchronous: str) -> float:
    """Raw commit-per-write run in a dedicated thread from trio: the floor of any design
    that keeps disk I/O off trio's thread (two thread wake-ups per write)."""
    conn = sqlite3.connect(tmp_db("floor.db"), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")

    def write(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i % 10}", json.dumps(i)))
        conn.execute("COMMIT")

    thread = _WriterThread("floor")
    start = time.perf_counter()
    for i in range(n):
        await thread.run(write, i)
    elapsed = (time.perf_counter() - start) / n * 1000
    thread.stop()
    return elapsed


async def trio_asyncio_floor(dsn: str, n: int) -> float:
    """Raw asyncpg upserts, each committed, sent from trio through trio-asyncio one at a
    time: what any trio design hosting asyncpg pays per durable write."""
    import asyncpg
    import trio_asyncio

    schema = f"stateward_bench_floor_{os.getpid()}"
    async with trio_asyncio.open_loop() as loop:
        conn = await loop.run_aio_coroutine(asyncpg.connect(dsn))
        await loop.run_aio_coroutine(conn.execute(f'CREATE SCHEMA "{schema}"'))
        await loop.run_aio_coroutine(
            conn.execute(f'CREATE TABLE "{schema}".kv (k text PRIMARY KEY, v text)')
        )
        upsert = (
            f'INSERT INTO "{schema}".kv VALUES ($1, $2) '
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        )
        start = time.perf_counter()
        for i in range(n):
            await loop.run_aio_coroutine(conn.execute(upsert, f"k{i % 10}", json.dumps(i)))
        elapsed = (time.perf_counter() - start) / n * 1000
        await loop.run_aio_coroutine(conn.close())
    drop_schema(dsn, schema)
    return elapsed


def main_postgres(n: int, db: str) -> None:
    raw = raw_postgres_baseline(db, n)
    ours = trio.run(measure, n, "FULL", db)
    floor = trio.run(trio_asyncio_floor, db, n)
    raw_write = raw["raw_commit_per_write_ms"]
    emit(
        "state_ops",
        store="postgres",
        n=n,
        **{k: round(v, 4) for k, v in ours.items()},
        **{k: round(v, 4) for k, v in raw.items()},
        ratio_sync_set_vs_raw_commit=round(ours["sync_set_ms"] / raw_write, 2),
        ratio_async_aset_vs_raw_commit=round(ours["async_aset_ms"] / raw_write, 2),
        ratio_sync_get_vs_raw_read=round(ours["sync_get_ms"] / raw["raw_read_ms"], 1),
        ratio_async_aget_vs_raw_read=round(ours["async_aget_ms"] / raw["raw_read_ms"], 1),
        raw_commit_via_trio_asyncio_ms=round(floor, 4),
        ratio_sync_set_vs_trio_asyncio_floor=round(ours["sync_set_ms"] / floor, 2),
        ratio_async_aset_vs_trio_asyncio_floor=round(ours["async_aset_ms"] / floor, 2),
        **machine(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument(
        "--db",
        help="a postgresql:// URL to measure the PostgreSQL store (default: a fresh SQLite file)",
    )
    args = parser.parse_args()
    if store_kind(args.db) == "postgres":
        main_postgres(args.n, args.db)
        return
    raw = raw_sqlite_baseline(args.n, args.synchronous)
    ours = trio.run(measure, args.n, args.synchronous, args.db)
    floor = trio.run(thread_floor, args.n, args.synchronous)
    raw_write = raw["raw_commit_per_write_ms"]
    emit(
        "state_ops",
        store="sqlite",
        n=args.n,
        synchronous=args.synchronous,
        **{k: round(v, 4) for k, v in ours.items()},
        **{k: round(v, 4) for k, v in raw.items()},
        ratio_sync_set_vs_raw_commit=round(ours["sync_set_ms"] / raw_write, 2),
        ratio_async_aset_vs_raw_commit=round(ours["async_aset_ms"] / raw_write, 2),
        ratio_sync_get_vs_raw_read=round(ours["sync_get_ms"] / raw["raw_read_ms"], 1),
        ratio_async_aget_vs_raw_read=round(ours["async_aget_ms"] / raw["raw_read_ms"], 1),
        raw_commit_via_thread_ms=round(floor, 4),
        ratio_sync_set_vs_thread_floor=round(ours["sync_set_ms"] / floor, 2),
        ratio_async_aset_vs_thread_floor=round(ours["async_aset_ms"] / floor, 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
