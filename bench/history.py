"""What state history costs: a durable write with history on against off, and reads and
writes on a store of 1,000,000 keys with 10 versions each against one of 1,000 keys.

Prints one JSON line. The on/off figures alternate rounds of ``aset`` from an async
task on fresh SQLite files (``synchronous=FULL``, a commit per write) and take each
side's median, so both meet the same load. Times on a shared machine are noisy, so the
SQLite line also counts what each commit writes, which load does not change: the pages
(WAL frames) a durable ``aset`` appends with history on and off. With ``--db`` naming a
PostgreSQL server, only the on/off figures are taken, each round in a schema of its
own (the line says ``"store": "postgres"``). The large store is built with direct SQL
inserts (building it through the API would take an hour), then both stores are opened
through ``open_runtime(history=10)`` and timed on the same operations: ``aget`` and
``aset`` of keys spread over the store, out of band. Usage::

    python bench/history.py [--n N] [--rounds R] [--keys 1000000] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import trio

from _common import backends_cpu_s, bench_runtime, emit, machine, tmp_db
from stateward import Dag, open_runtime
from stateward.store.sqlite.store import SqliteStore

VERSIONS = 10
#: SQLite's default page size, which stateward keeps.
PAGE_SIZE = 4096
KEYS_PER_TASK = 1000


#: Writes counted for the pages per commit.
COUNTED = 200


async def write_ms(n: int, history: int, db: str | None = None) -> dict[str, float]:
    """One run of ``n`` durable ``aset`` from an async task: ms per write (``ms``), and
    on PostgreSQL the CPU µs per write of this process (``cpu_us``) and of the server
    processes serving it (``server_us``, when this machine's /proc shows them)."""
    figures: dict[str, float] = {}
    dag = Dag("bench")
    opened = time.time()

    @dag.task
    async def writes(task_state: Any) -> None:
        await task_state.aset("k0", -1)  # the connection is open, its statements known
        server = None if db is None else backends_cpu_s(db, opened)
        cpu, start = time.process_time(), time.perf_counter()
        for i in range(n):
            await task_state.aset(f"k{i % 10}", i)
        figures["ms"] = (time.perf_counter() - start) / n * 1000
        figures["cpu_us"] = (time.process_time() - cpu) / n * 1e6
        if server is not None and (after := backends_cpu_s(str(db), opened)) is not None:
            figures["server_us"] = (after - server) / n * 1e6

    async with bench_runtime(db, "history.db", history=history) as rt:
        result = await rt.run_task(writes, run_id="bench")
        if result.error is not None:
            raise result.error
    return figures


async def pages_per_write(history: int) -> float:
    """WAL frames one durable ``aset`` appends on SQLite, once each key has a full
    history (frames are whole pages: this is what each commit writes and syncs)."""
    path = tmp_db("pages.db")
    wal = trio.Path(f"{path}-wal")
    figures: dict[str, float] = {}
    dag = Dag("bench")

    @dag.task
    async def writes(task_state: Any) -> None:
        for i in range(2 * VERSIONS * 10):  # every key past its bound
            await task_state.aset(f"k{i % 10}", i)
        # A reader's open snapshot keeps a checkpoint from starting the WAL over, so
        # the WAL only grows while the writes are counted.
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM task_state").fetchone()
        before = (await wal.stat()).st_size
        for i in range(COUNTED):
            await task_state.aset(f"k{i % 10}", i)
        figures["pages"] = ((await wal.stat()).st_size - before) / (PAGE_SIZE + 24) / COUNTED
        reader.close()

    async with open_runtime(path, history=history) as rt:
        result = await rt.run_task(writes, run_id="bench")
        if result.error is not None:
            raise result.error
    return figures["pages"]


def on_off(n: int, rounds: int, db: str | None) -> dict[str, Any]:
    """Alternating rounds with history off and on: each side's median, their ratio. On
    PostgreSQL also the CPU per write, this process's and the server's: their sum's
    ratio is what history costs whatever the load (the time waits for the server's
    WAL syncs, which other work on the machine slows)."""
    off: list[dict[str, float]] = []
    on: list[dict[str, float]] = []
    for _ in range(rounds):
        off.append(trio.run(write_ms, n, 0, db))
        on.append(trio.run(write_ms, n, VERSIONS, db))
    figures: dict[str, Any] = {}
    names = ("ms", "cpu_us", "server_us") if db is not None and "server_us" in off[0] else ("ms",)
    for name in names:
        for side, runs in (("off", off), ("on", on)):
            figures[f"history_{side}_set_{name}"] = statistics.median(r[name] for r in runs)
    figures["history_write_ratio"] = figures["history_on_set_ms"] / figures["history_off_set_ms"]
    if "server_us" in names:
        cpu = {side: statistics.median(r["cpu_us"] + r["server_us"] for r in runs)
               for side, runs in (("off", off), ("on", on))}  # fmt: skip
        figures["history_cpu_ratio"] = cpu["on"] / cpu["off"]
    return figures


def build(path: Path, keys: int) -> None:
    """A store of ``keys`` task-state keys (1,000 per task instance) with VERSIONS
    versions each, written by SQL in one transaction."""

    async def create() -> None:
        async with SqliteStore(path):
            pass

    trio.run(create)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    series = f"WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {keys - 1})"
    scope = f"'bench', 'r', 't' || (i / {KEYS_PER_TASK}), ''"
    conn.execute(
        f"{series} INSERT INTO task_state (dag_id, run_id, task_id, item, key, map_index, value,"
        f" updated_at, expires_at, writer_try) SELECT {scope}, 'k' || (i % {KEYS_PER_TASK}),"
        " -1, CAST(i AS TEXT), 1.0, NULL, NULL FROM c"
    )
    by = json.dumps({"kind": "api"})
    conn.execute(
        f"{series}, v(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM v WHERE n < {VERSIONS}) "
        "INSERT INTO task_state_history (dag_id, run_id, task_id, item, key, slot, version,"
        f" value, updated_at, updated_by) SELECT {scope}, 'k' || (i % {KEYS_PER_TASK}),"
        f" n % {VERSIONS}, n,"
        f" CAST(i AS TEXT), 1.0, '{by}' FROM c, v"
    )
    conn.execute("COMMIT")
    conn.close()


async def ops_ms(path: Path, keys: int, n: int) -> dict[str, float]:
    """``aget`` and ``aset`` of ``n`` keys drawn across the store, out of band."""
    rng = random.Random(7)
    picks = [rng.randrange(keys) for _ in range(n)]
    async with open_runtime(path, history=VERSIONS) as rt:
        accessors = {
            t: rt.state.task("bench", "r", f"t{t}") for t in {i // KEYS_PER_TASK for i in picks}
        }
        start = time.perf_counter()
        for i in picks:
            await accessors[i // KEYS_PER_TASK].aget(f"k{i % KEYS_PER_TASK}")
        get = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for i in picks:
            await accessors[i // KEYS_PER_TASK].aset(f"k{i % KEYS_PER_TASK}", i)
        put = (time.perf_counter() - start) / n * 1000
    return {"get_ms": get, "set_ms": put}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # On PostgreSQL a round of 400 writes lasts about 0.15 s a side, and single
    # rounds move by 10-20%: more and longer rounds there (default 1000 writes, 9 rounds).
    parser.add_argument("--n", type=int, help="writes per round (default 400; 1000 with --db)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 9 with --db)")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--db", help="a postgresql:// URL: measure on/off there instead")
    args = parser.parse_args()
    if args.n is None:
        args.n = 400 if args.db is None else 1000
    if args.rounds is None:
        args.rounds = 5 if args.db is None else 9
    figures = on_off(args.n, args.rounds, args.db)
    if args.db is not None:
        emit("history", store="postgres", **figures, versions=VERSIONS, n=args.n,
             rounds=args.rounds, **machine())  # fmt: skip
        return
    figures["history_off_pages_per_set"] = trio.run(pages_per_write, 0)
    figures["history_on_pages_per_set"] = trio.run(pages_per_write, VERSIONS)
    small, big = tmp_db("small.db"), tmp_db("big.db")
    build(small, 1000)
    start = time.perf_counter()
    build(big, args.keys)
    figures["big_build_s"] = time.perf_counter() - start
    figures["big_keys"] = args.keys
    figures["big_bytes"] = big.stat().st_size
    # Alternating rounds, so both stores meet the same load; the spread of one store's
    # rounds (max / min) is the noise a ratio is judged against.
    small_ops: list[dict[str, float]] = []
    big_ops: list[dict[str, float]] = []
    for _ in range(args.rounds):
        small_ops.append(trio.run(ops_ms, small, 1000, args.n))
        big_ops.append(trio.run(ops_ms, big, args.keys, args.n))
    for name in ("get_ms", "set_ms"):
        for side, rounds in (("small", small_ops), ("big", big_ops)):
            times = [r[name] for r in rounds]
            figures[f"{side}_{name}"] = statistics.median(times)
            figures[f"{side}_{name[:3]}_spread"] = max(times) / min(times)
        figures[f"big_{name[:3]}_ratio"] = figures[f"big_{name}"] / figures[f"small_{name}"]
    for path in (small, big):  # ~600 MB for a million keys: not left in the temp folder
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    emit("history", **figures, versions=VERSIONS, n=args.n, rounds=args.rounds, **machine())


if __name__ == "__main__":
    main()
