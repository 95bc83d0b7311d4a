"""A Dag with one task mapped 10,000 ways, each instance doing one set and one get.

Prints one JSON line: wall time and peak RSS of the whole run (a fresh process), and the
same number of set+get pairs through raw sqlite3 (commit per write) as the baseline.
Usage::

    python bench/mapped.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import time

from _common import emit, machine, tmp_db

CHILD = """
import sys, time, resource, json
import trio
from stateward import Dag, open_runtime

n, db = int(sys.argv[1]), sys.argv[2]
dag = Dag("mapped", max_active_tasks=64)

@dag.task
def shard(i, task_state):
    task_state.set("i", i)
    return task_state.get("i")

shard.expand(i=list(range(n)))

async def main():
    async with open_runtime(db) as rt:
        start = time.perf_counter()
        result = await rt.run_dag(dag, run_id="bench")
        return time.perf_counter() - start, result.state

elapsed, state = trio.run(main)
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"run_seconds": elapsed, "state": state, "peak_rss_mb": rss_mb}))
"""


def raw_pairs(n: int) -> float:
    conn = sqlite3.connect(tmp_db("raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE kv (scope TEXT, key TEXT, value TEXT, PRIMARY KEY (scope, key))")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, 'i', ?)", (str(i), json.dumps(i)))
        conn.execute("COMMIT")
        conn.execute("SELECT value FROM kv WHERE scope = ? AND key = 'i'", (str(i),)).fetchone()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.n), str(tmp_db("stateward.db"))],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    process_seconds = time.perf_counter() - start
    child = json.loads(out.stdout.strip().splitlines()[-1])
    raw = raw_pairs(args.n)
    emit(
        "mapped",
        instances=args.n,
        state=child["state"],
        run_seconds=round(child["run_seconds"], 2),
        process_seconds=round(process_seconds, 2),
        peak_rss_mb=round(child["peak_rss_mb"], 1),
        raw_set_get_pairs_seconds=round(raw, 2),
        ratio_run_vs_raw=round(child["run_seconds"] / raw, 2),
        self_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **machine(),
    )


if __name__ == "__main__":
    main()
