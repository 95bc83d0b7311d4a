"""What state history costs: a durable write with history on against off, and reads and
writes on a store of 1,000,000 keys with 10 versions each against one of 1,000 keys.

Prints one JSON line. The on/off figures alternate rounds of ``aset`` from an async
task on fresh SQLite files (``synchronous=FULL``, a commit per write) and take each
side's median, so both meet the same load. The large store is built with direct SQL
inserts (building it through the API would take an hour), then both stores are opened
through ``open_runtime(history=10)`` and timed on the same operations: ``aget`` and
``aset`` of keys spread over the store, out of band. Usage::

    python bench/history.py [--n 400] [--rounds 5] [--keys 1000000]
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

from _common import emit, machine, tmp_db
from stateward import Dag, open_runtime
from stateward.store.sqlite.store import SqliteStore

VERSIONS = 10
KEYS_PER_TASK = 1000


async def write_ms(n: int, history: int) -> float:
    """One run of ``n`` durable ``aset`` from an async task: ms per write."""
    figures: dict[str, float] = {}
    dag = Dag("bench")

    @dag.task
    async def writes(task_state: Any) -> None:
        start = time.perf_counter()
        for i in range(n):
            await task_state.aset(f"k{i % 10}", i)
        figures["ms"] = (time.perf_counter() - start) / n * 1000

    async with open_runtime(tmp_db("history.db"), history=history) as rt:
        result = await rt.run_task(writes, run_id="bench")
        if result.error is not None:
            raise result.error
    return figures["ms"]


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
        "INSERT INTO task_state_history (dag_id, run_id, task_id, item, key, version, value,"
        f" updated_at, updated_by) SELECT {scope}, 'k' || (i % {KEYS_PER_TASK}), n,"
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
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.rounds):
        off.append(trio.run(write_ms, args.n, 0))
        on.append(trio.run(write_ms, args.n, VERSIONS))
    figures: dict[str, Any] = {
        "history_off_set_ms": statistics.median(off),
        "history_on_set_ms": statistics.median(on),
    }
    figures["history_write_ratio"] = figures["history_on_set_ms"] / figures["history_off_set_ms"]
    small, big = tmp_db("small.db"), tmp_db("big.db")
    build(small, 1000)
    start = time.perf_counter()
    build(big, args.keys)
    figures["big_build_s"] = time.perf_counter() - start
    figures["big_keys"] = args.keys
    figures["big_bytes"] = big.stat().st_size
    small_ops = [trio.run(ops_ms, small, 1000, args.n) for _ in range(args.rounds)]
    big_ops = [trio.run(ops_ms, big, args.keys, args.n) for _ in range(args.rounds)]
    for name in ("get_ms", "set_ms"):
        figures[f"small_{name}"] = statistics.median(r[name] for r in small_ops)
        figures[f"big_{name}"] = statistics.median(r[name] for r in big_ops)
        figures[f"big_{name[:3]}_ratio"] = figures[f"big_{name}"] / figures[f"small_{name}"]
    emit("history", **figures, versions=VERSIONS, n=args.n, rounds=args.rounds, **machine())


if __name__ == "__main__":
    main()
