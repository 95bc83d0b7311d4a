"""Child process for test_multiprocess: one of several runtimes sharing one SQLite file.

Usage: ``python mp_child.py DB NAME LANES PER_LANE ROUNDS``. Prints ``loaded`` and waits for
``open`` on stdin (so every child opens the new file at once), prints ``ready`` and waits
for ``go``; then runs a Dag whose ``LANES`` mapped instances each increment the shared
asset key ``hits`` ``PER_LANE`` times while an ``elect`` task tries, for each of
``ROUNDS`` keys, a compare-and-set from absent to ``NAME``. Prints one ``inc <value>``
per increment, one ``cas <round> <won>`` per round, then ``done``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import trio

from stateward import Asset, Dag, open_runtime

SHARED = Asset("shared", "mem://shared")
_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one whole line and flush it (trio's thread and a worker thread both print)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def build(name: str, lanes: int, per_lane: int, rounds: int) -> Dag:
    dag = Dag("multi")

    @dag.task(outlets=[SHARED])
    async def bump(asset_state: Any, lane: int) -> None:
        for _ in range(per_lane):
            value = await asset_state.aincrement("hits")
            emit(f"inc {value}")

    bump.expand(lane=list(range(lanes)))

    @dag.task(outlets=[SHARED])
    def elect(asset_state: Any) -> None:  # a worker thread, for the sync path
        for r in range(rounds):
            won = asset_state.compare_and_set(f"leader-{r}", None, name)
            emit(f"cas {r} {int(won)}")

    return dag


async def main(db: str, name: str, lanes: int, per_lane: int, rounds: int) -> None:
    emit("loaded")
    assert sys.stdin.readline().strip() == "open"
    async with open_runtime(db, busy_timeout=60) as rt:
        emit("ready")
        assert await trio.to_thread.run_sync(sys.stdin.readline) == "go\n"
        result = await rt.run_dag(build(name, lanes, per_lane, rounds), run_id=name)
        assert result.state == "success", [ti.error for ti in result.failed]
    emit("done")


if __name__ == "__main__":
    db, name, lanes, per_lane, rounds = sys.argv[1:]
    trio.run(main, db, name, int(lanes), int(per_lane), int(rounds))
