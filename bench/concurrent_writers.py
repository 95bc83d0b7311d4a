"""64 task actors writing durably at once: throughput against raw commit-per-write.

Prints one JSON line: writes per second through stateward (each write acknowledged only
after its transaction committed, synchronous=FULL), raw sqlite3 committing each write,
and the ratio; also how many transactions the writes took (group commit). With ``--db
postgresql://...`` it measures the PostgreSQL store (in a schema of its own, dropped
after) against raw asyncpg committing each write. Usage::

    python bench/concurrent_writers.py [--writers 64] [--writes 50] [--db postgresql://...]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio

from _common import (
    bench_runtime,
    emit,
    machine,
    raw_postgres_baseline,
    raw_sqlite_baseline,
    store_kind,
)
from stateward import Dag


async def measure(writers: int, writes: int, db: str | None = None) -> dict[str, Any]:
    dag = Dag("writers", max_active_tasks=writers)

    @dag.task
    async def write(i: int, task_state: Any) -> None:
        for n in range(writes):
            await task_state.aset("n", n)

    write.expand(i=list(range(writers)))
    async with bench_runtime(db, "stateward.db") as rt:
        before = rt.store.write_transactions
        start = time.perf_counter()
        result = await rt.run_dag(dag, run_id="bench")
        elapsed = time.perf_counter() - start
        assert result.state == "success", result.failed
        transactions = rt.store.write_transactions - before
    total = writers * writes
    return {"writes": total, "seconds": elapsed, "transactions": transactions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument(
        "--db",
        help="a postgresql:// URL to measure the PostgreSQL store (default: a fresh SQLite file)",
    )
    args = parser.parse_args()
    store = store_kind(args.db)
    raw = raw_postgres_baseline(args.db, 2000) if store == "postgres" else raw_sqlite_baseline(2000)
    ours = trio.run(measure, args.writers, args.writes, args.db)
    ours_per_s = ours["writes"] / ours["seconds"]
    raw_per_s = 1000 / raw["raw_commit_per_write_ms"]
    emit(
        "concurrent_writers",
        store=store,
        writers=args.writers,
        writes=ours["writes"],
        transactions=ours["transactions"],
        writes_per_transaction=round(ours["writes"] / ours["transactions"], 1),
        stateward_writes_per_s=round(ours_per_s),
        raw_commit_per_write_per_s=round(raw_per_s),
        ratio_vs_raw=round(ours_per_s / raw_per_s, 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
