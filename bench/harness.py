"""The cost of one harness test on the MemoryStore; prints one JSON line.

One "harness test" is what a user's test of a stateful task does, run the way
pytest-trio runs each test (a fresh ``trio.run``): open a runtime on a MemoryStore,
seed a task-state key, run one task that reads and writes it, read the state back,
close the runtime. Target: a median under 20 ms.

Figures, in milliseconds over ``--repetitions`` runs after a warm-up:

- ``median_ms`` / ``p95_ms``: with a plain ``def`` task (it runs in a worker thread);
- ``async_task_median_ms``: the same with an ``async def`` task;
- ``sync_harness_median_ms``: the same through ``SyncHarness`` (the ``sw_sync``
  fixture), which also starts and joins a thread;
- ``baseline_median_ms``: the same sequence without stateward, in the same process: a
  fresh ``trio.run`` that seeds a plain dict, calls the task's function on it
  directly and reads the dict back; ``ratio_median`` is ``median_ms`` over it.

Run: ``.venv/bin/python bench/harness.py [--repetitions N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from _common import emit, machine
from stateward import Dag, MemoryStore, open_runtime
from stateward.testing import StateHarness, SyncHarness

TARGET_MS = 20.0

dag = Dag("bench")


def bump_count(task_state: Any) -> int:
    count: int = task_state.get("count") + 1
    task_state.set("count", count)
    return count


@dag.task
def bump(task_state: Any) -> int:
    return bump_count(task_state)


@dag.task
async def abump(task_state: Any) -> int:
    count: int = await task_state.aget("count") + 1
    await task_state.aset("count", count)
    return count


class DictState:
    """The two accessor methods the task uses, on a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def harness_test(task: Any) -> Callable[[], None]:
    async def main() -> None:
        async with open_runtime(store=MemoryStore()) as rt:
            sw = StateHarness(rt)
            await sw.seed_task_state(task, count=1)
            result = await sw.run_task(task)
            state = await sw.task_state(task)
        assert result.state == "success", result.error
        assert state == {"count": 2}, state

    return lambda: trio.run(main)


def sync_harness_test() -> None:
    with SyncHarness() as sw:
        sw.seed_task_state(bump, count=1)
        result = sw.run_task(bump)
        state = sw.task_state(bump)
    assert result.state == "success", result.error
    assert state == {"count": 2}, state


def baseline_test() -> None:
    async def main() -> None:
        state = DictState()
        state.set("count", 1)
        bump_count(state)
        assert dict(state.data) == {"count": 2}

    trio.run(main)


def measure(test: Callable[[], None], repetitions: int) -> list[float]:
    """Milliseconds of each of ``repetitions`` runs of ``test``, after a warm-up."""
    for _ in range(max(10, repetitions // 10)):
        test()
    times: list[float] = []
    for _ in range(repetitions):
        started = time.perf_counter()
        test()
        times.append((time.perf_counter() - started) * 1000)
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=500)
    args = parser.parse_args(argv)
    n = args.repetitions

    sync_task = measure(harness_test(bump), n)
    async_task = measure(harness_test(abump), n)
    sync_harness = measure(sync_harness_test, max(20, n // 5))
    baseline = measure(baseline_test, n)

    median = statistics.median(sync_task)
    baseline_median = statistics.median(baseline)
    emit(
        "harness",
        store="memory",
        repetitions=n,
        median_ms=round(median, 3),
        p95_ms=round(p95(sync_task), 3),
        async_task_median_ms=round(statistics.median(async_task), 3),
        async_task_p95_ms=round(p95(async_task), 3),
        sync_harness_median_ms=round(statistics.median(sync_harness), 3),
        sync_harness_p95_ms=round(p95(sync_harness), 3),
        baseline="trio.run + plain dict, task function called directly",
        baseline_median_ms=round(baseline_median, 3),
        ratio_median=round(median / baseline_median, 1),
        target_ms=TARGET_MS,
        under_target=median < TARGET_MS,
        **machine(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
