"""One runtime in its own process, on a shared PostgreSQL schema (for test_postgres.py).

Usage: ``python pg_worker.py DSN SCHEMA INDEX INSTANCES INCREMENTS``. It reads the task
state the test seeded, runs a task that writes task state of its own, and runs
INSTANCES mapped task instances that each increment the shared asset key INCREMENTS
times; then prints one JSON line: what it read and every value its increments got.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from stateward import Asset, Dag, open_runtime
from stateward.store.postgres import PostgresStore

COUNTER = Asset("counter", "pg://counter")


async def main(dsn: str, schema: str, index: int, instances: int, increments: int) -> None:
    dag = Dag("workers")

    @dag.task
    async def note(task_state: Any) -> None:
        await task_state.aset("written_by", index)

    @dag.task(outlets=[COUNTER])
    async def count(part: int, asset_state: Any) -> list[int]:
        return [await asset_state.aincrement("n") for _ in range(increments)]

    count.expand(part=list(range(instances)))
    async with open_runtime(store=PostgresStore(dsn, schema=schema)) as rt:
        seen = await rt.state.task("seed", "run", "t").aget("greeting")
        result = await rt.run_dag(dag, run_id=f"worker{index}")
        assert result.state == "success", result.failed
        got = [n for i in range(instances) for n in result.ti("count", map_index=i).result]
    print(json.dumps({"seen": seen, "increments": got}))


if __name__ == "__main__":
    dsn, schema, *numbers = sys.argv[1:]
    index, instances, increments = map(int, numbers)
    trio.run(main, dsn, schema, index, instances, increments)
