"""Child process for test_leases: one runtime joining a run that others may share.

Usage: ``python lease_child.py STORE RUN_ID MODE SIDE_EFFECTS LEASE_TIMEOUT COUNT``.
``STORE`` is an SQLite path or ``postgresql://...#schema``. Prints ``ready`` once its
runtime is open and waits for a line on stdin before running; prints ``result STATE``
when the run ends. Every try of an instance first appends ``index try pid`` to
``SIDE_EFFECTS`` (O_APPEND: one whole line per write, whatever the process), so the
parent counts what ran outside the store.

Modes: ``split``: COUNT mapped instances that each sleep 50 ms, then ``after``;
``hang``: try 1 of the one instance prints ``started`` and never ends, a later try
succeeds; ``beat``: try 1 writes ``beat`` again and again (printing ``wrote i`` after
each acknowledged write, and ``refused`` when a write is refused with
StaleAttemptError), a later try writes ``beat = "taken over"`` and succeeds.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import trio

from stateward import Dag, StaleAttemptError, Store, open_runtime


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def side_effect(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build(mode: str, path: str, count: int) -> Dag:
    dag = Dag("leases", max_active_tasks=8)

    if mode == "split":

        @dag.task
        async def work(ti: Any, n: int) -> int:
            side_effect(path, f"{ti.map_index} {ti.try_number} {os.getpid()}")
            await trio.sleep(0.05)
            return n

        @dag.task
        async def after(ti: Any) -> None:
            side_effect(path, f"after {ti.try_number} {os.getpid()}")

        work.expand(n=list(range(count))) >> after
        return dag

    @dag.task
    async def one(ti: Any, task_state: Any) -> str:
        side_effect(path, f"{ti.map_index} {ti.try_number} {os.getpid()}")
        if ti.try_number > 1:
            await task_state.aset("beat", "taken over")
            return "done"
        if mode == "hang":
            emit("started")
            await trio.sleep_forever()
        i = 0
        while True:
            try:
                await task_state.aset("beat", i)
            except StaleAttemptError:
                emit("refused")
                raise
            emit(f"wrote {i}")
            i += 1
            await trio.sleep(0.1)

    return dag


def open_store(target: str) -> Store | None:
    if not target.startswith("postgresql://"):
        return None
    from stateward.store.postgres import PostgresStore

    dsn, _, schema = target.partition("#")
    return PostgresStore(dsn, schema=schema)


async def main() -> None:
    target, run_id, mode, path, timeout, count = sys.argv[1:7]
    store = open_store(target)
    db = None if store is not None else target
    async with open_runtime(db, store=store, lease_timeout=float(timeout)) as rt:
        emit("ready")
        await trio.to_thread.run_sync(sys.stdin.readline)
        result = await rt.run_dag(build(mode, path, int(count)), run_id=run_id)
        emit(f"result {result.state}")


if __name__ == "__main__":
    trio.run(main)
