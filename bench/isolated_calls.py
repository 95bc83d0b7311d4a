"""The fixed cost of a state call from an isolated task: `aget` in process and in a task
process, many short rounds alternating between the two, in one run.

Prints one JSON line: for each mode the fastest and the median round (ms per `aget`),
and for the task process the CPU per call of the task process and of the runtime (the
fastest round; the load moves these much less than the walls), and the ratios
isolated / in process of the fastest and of the median rounds. A round is ``--n`` calls
in one attempt; ``--rounds`` attempts per mode, alternating. Usage::

    python bench/isolated_calls.py [--n 1000] [--rounds 15]

The task processes load this file by path, as they load any Dag file.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from typing import Any

import trio

from _common import emit, machine, tmp_db
from stateward import Dag, open_runtime

dag = Dag("bench_isolated_calls", params={"n": 1000})


@dag.task
async def agets(task_state: Any, params: Any) -> dict[str, float]:
    n = params["n"]
    for i in range(10):
        await task_state.aset(f"k{i}", i)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await task_state.aget(f"k{i % 10}")
    return {
        "ms": (time.perf_counter() - start) / n * 1000,
        "cpu_ms": (time.process_time() - cpu) / n * 1000,
    }


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


async def rounds(isolation: str, n: int, count: int) -> list[dict[str, float]]:
    """``count`` attempts of ``n`` calls each, in one runtime."""
    found = []
    async with open_runtime(db=tmp_db(f"{isolation}.db"), isolation=isolation) as rt:
        await rt.run_task(agets, run_id="warm-up", params={"n": 100})
        for i in range(count):
            cpu = _cpu_s()
            ti = await rt.run_task(agets, run_id=f"r{i}", params={"n": n})
            if ti.error is not None:
                raise ti.error
            found.append({**ti.result, "runtime_cpu_ms": (_cpu_s() - cpu) / n * 1000})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per mode")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    inline: list[dict[str, float]] = []
    isolated: list[dict[str, float]] = []
    for _ in range(3):  # alternate, so that both modes see the same minutes
        inline += trio.run(rounds, "none", args.n, args.rounds // 3 or 1)
        isolated += trio.run(rounds, "process", args.n, args.rounds // 3 or 1)
    walls = {
        "in_process": [r["ms"] for r in inline],
        "isolated": [r["ms"] for r in isolated],
    }
    fastest = {mode: min(ms) for mode, ms in walls.items()}
    median = {mode: statistics.median(ms) for mode, ms in walls.items()}
    emit(
        "isolated_calls",
        n=args.n,
        rounds=len(isolated),
        **{f"{mode}_aget_ms_fastest": round(ms, 4) for mode, ms in fastest.items()},
        **{f"{mode}_aget_ms_median": round(ms, 4) for mode, ms in median.items()},
        ratio_fastest=round(fastest["isolated"] / fastest["in_process"], 2),
        ratio_median=round(median["isolated"] / median["in_process"], 2),
        task_process_cpu_ms=round(min(r["cpu_ms"] for r in isolated), 4),
        runtime_cpu_ms=round(min(r["runtime_cpu_ms"] for r in isolated), 4),
        in_process_cpu_ms=round(min(r["runtime_cpu_ms"] for r in inline), 4),
        load_average_at_start=round(load, 2),
        load_average_at_end=round(os.getloadavg()[0], 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
