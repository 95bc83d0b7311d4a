"""64 task actors writing durably at once: throughput against raw commit-per-write.

Prints one JSON line: writes per second through stateward (each write acknowledged only
after its transaction committed, synchronous=FULL), raw sqlite3 committing each write,
and the ratio; also how many transactions the writes took (group commit). Usage::

    python bench/concurrent_writers.py [--writers 64] [--writes 50]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio

from _common import emit, machine, raw_sqlite_baseline, tmp_db
from stateward import Dag, open_runtime


async def measure(writers: int, writes: int) -> dict[str, Any]:
    dag = Dag("writers", max_active_tasks=writers)

    @dag.task
    async def write(i: int, task_state: Any) -> None:
        for n in range(writes):
            await task_state.aset("n", n)

    write.expand(i=list(range(writers)))
    async with open_runtime(tmp_db("stateward.db")) as rt:
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
    args = parser.parse_args()
    raw = raw_sqlite_baseline(2000)
    ours = trio.run(measure, args.writers, args.writes)
    ours_per_s = ours["writes"] / ours["seconds"]
    raw_per_s = 1000 / raw["raw_commit_per_write_ms"]
    emit(
        "concurrent_writers",
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
