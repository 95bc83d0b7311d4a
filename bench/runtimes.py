"""Runtimes sharing one run: 1, 2 and 3 processes on one PostgreSQL run id.

Each figure starts that many runtime processes (each its own ``open_runtime``, a Dag
with ``max_active_tasks=16``) on one run id of a task mapped ``--n`` ways whose
instances each sleep ``--sleep-ms``; the runtimes split the instances through their
leases. The wall time is from the moment every process is ready (its runtime open)
until the last one has reported its run finished. Prints one JSON line. Usage::

    python bench/runtimes.py --db postgresql://postgres@127.0.0.1:5432/test [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import drop_schema, emit, machine

CHILD = """
import sys
import trio
from stateward import Dag, open_runtime
from stateward.store.postgres import PostgresStore

dsn, schema, n, sleep_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
dag = Dag("spread", max_active_tasks=16)

@dag.task
async def nap(i):
    await trio.sleep(sleep_ms / 1000)
    return i

nap.expand(i=list(range(n)))

async def main():
    async with open_runtime(store=PostgresStore(dsn, schema=schema)) as rt:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        result = await rt.run_dag(dag, run_id="spread")
        print(f"done {result.state}", flush=True)

trio.run(main)
"""


def wall_seconds(dsn: str, runtimes: int, n: int, sleep_ms: float) -> float:
    """Seconds for ``runtimes`` processes to finish one run of ``n`` instances."""
    schema = f"stateward_bench_runtimes_{os.getpid()}_{runtimes}"
    args = [sys.executable, "-c", CHILD, dsn, schema, str(n), str(sleep_ms)]
    # Open one runtime first so the schema is created (migrated) before the others.
    procs = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)]
    try:
        assert procs[0].stdout is not None
        assert procs[0].stdout.readline().strip() == "ready"
        for _ in range(runtimes - 1):
            procs.append(
                subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        for proc in procs[1:]:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "done success", line
        elapsed = time.perf_counter() - start
        for proc in procs:
            proc.wait(timeout=60)
        return elapsed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        drop_schema(dsn, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a postgresql:// URL")
    parser.add_argument("--n", type=int, default=1000, help="mapped instances")
    parser.add_argument("--sleep-ms", type=float, default=50.0, help="each instance's sleep")
    args = parser.parse_args()
    seconds = {k: wall_seconds(args.db, k, args.n, args.sleep_ms) for k in (1, 2, 3)}
    emit(
        "runtimes",
        store="postgres",
        instances=args.n,
        sleep_ms=args.sleep_ms,
        max_active_tasks=16,
        **{f"runtimes_{k}_seconds": round(v, 2) for k, v in seconds.items()},
        speedup_2=round(seconds[1] / seconds[2], 2),
        speedup_3=round(seconds[1] / seconds[3], 2),
        ideal_1_seconds=round(args.n * args.sleep_ms / 1000 / 16, 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
