"""What isolation="process" costs: state operations and a one-task run, in process vs isolated.

Prints one JSON line: per-operation latency of set/get from a sync task and aset/aget
from an async task, each measured in process and in a task process (ms per op); the
median wall time of running a trivial task (ms: the task process's start-up, load and
exit, against a thread hop); and the ratios isolated / in process. Usage::

    python bench/isolation.py [--n 2000] [--runs 10] [--store sqlite|memory]

The task processes load this file by path, as they load any Dag file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import trio

from _common import emit, machine, tmp_db
from stateward import Dag, MemoryStore, open_runtime

dag = Dag("bench_isolation", params={"n": 2000})


@dag.task
def sync_ops(task_state: Any, params: Any) -> dict[str, float]:
    n = params["n"]
    start = time.perf_counter()
    for i in range(n):
        task_state.set(f"k{i % 10}", i)
    set_ms = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for i in range(n):
        task_state.get(f"k{i % 10}")
    return {"set_ms": set_ms, "get_ms": (time.perf_counter() - start) / n * 1000}


@dag.task
async def async_ops(task_state: Any, params: Any) -> dict[str, float]:
    n = params["n"]
    start = time.perf_counter()
    for i in range(n):
        await task_state.aset(f"k{i % 10}", i)
    aset_ms = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for i in range(n):
        await task_state.aget(f"k{i % 10}")
    return {"aset_ms": aset_ms, "aget_ms": (time.perf_counter() - start) / n * 1000}


@dag.task
def noop() -> None:
    return None


async def measure(isolation: str, n: int, runs: int, store: str) -> dict[str, float]:
    """Every figure for one isolation mode, in a runtime of its own."""
    where = {"store": MemoryStore()} if store == "memory" else {"db": tmp_db(f"{isolation}.db")}
    figures: dict[str, float] = {}
    async with open_runtime(**where, isolation=isolation) as rt:
        for task in (sync_ops, async_ops):
            ti = await rt.run_task(task, run_id="ops", params={"n": n})
            if ti.error is not None:
                raise ti.error
            figures.update(ti.result)
        await rt.run_task(noop, run_id="warm-up")
        times = []
        for i in range(runs):
            start = time.perf_counter()
            ti = await rt.run_task(noop, run_id=f"run-{i}")
            times.append((time.perf_counter() - start) * 1000)
            if ti.error is not None:
                raise ti.error
        figures["one_task_run_ms"] = statistics.median(times)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations of each kind")
    parser.add_argument("--runs", type=int, default=10, help="one-task runs to time")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    inline = trio.run(measure, "none", args.n, args.runs, args.store)
    isolated = trio.run(measure, "process", args.n, args.runs, args.store)
    names = ("set_ms", "get_ms", "aset_ms", "aget_ms", "one_task_run_ms")
    emit(
        "isolation",
        n=args.n,
        runs=args.runs,
        store=args.store,
        **{f"in_process_{k}": round(inline[k], 4) for k in names},
        **{f"isolated_{k}": round(isolated[k], 4) for k in names},
        **{f"ratio_{k.removesuffix('_ms')}": round(isolated[k] / inline[k], 2) for k in names},
        **machine(),
    )


if __name__ == "__main__":
    main()
