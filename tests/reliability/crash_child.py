"""Child process for test_crash: writes an increasing sequence until it is killed.

Usage: ``python crash_child.py DB SYNCHRONOUS``. Prints ``start`` before opening the
runtime, then, for every write of every lane, ``begin <lane> <i>`` before it and, once
all of iteration ``i``'s writes were acknowledged, ``ack <lane> <i> <count>`` (``count``
is what the asset increment returned). Each line is flushed at once, so what the parent
has read was acknowledged before the kill. Lanes: three mapped ``async`` instances and
one plain-function task in a worker thread; each resumes after its stored ``n``
(or redoes iteration ``n`` if its blob is missing).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import trio

from stateward import Asset, Dag, open_runtime

COUNTER = Asset("crash-counter", "mem://crash-counter")
#: A value spanning SQLite overflow pages: a torn write would show in it.
PAD = 20_000
ITERATIONS = 1_000_000
_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one whole line and flush it (from trio's thread or a worker thread)."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def blob(i: int) -> dict[str, Any]:
    """The large value written at iteration ``i``."""
    return {"i": i, "pad": str(i % 10) * PAD}


def resume_from(n: int, stored: dict[str, Any] | None) -> int:
    """The iteration to start at: the one after the stored ``n``, or ``n`` itself when
    its blob was never written (a kill between the two writes). Skipping it would leave
    the blob two behind ``n`` after the next such kill, which the parent's checks (the
    blob is ``n`` or ``n - 1``) would take for a lost write."""
    return n if n >= 0 and (stored is None or stored["i"] < n) else n + 1


def build() -> Dag:
    dag = Dag("crash")

    @dag.task(outlets=[COUNTER])
    async def fleet(task_state: Any, asset_state: Any, lane: int) -> None:
        i = resume_from(await task_state.aget("n", -1), await task_state.aget("blob"))
        while i < ITERATIONS:
            emit(f"begin {lane} {i}")
            await task_state.aset("n", i)
            await task_state.aset("blob", blob(i))
            count = await asset_state.aincrement("count")
            emit(f"ack {lane} {i} {count}")
            i += 1

    fleet.expand(lane=[0, 1, 2])

    @dag.task(outlets=[COUNTER])
    def threaded(task_state: Any, asset_state: Any) -> None:
        i = resume_from(task_state.get("n", -1), task_state.get("blob"))
        while i < ITERATIONS:
            emit(f"begin s {i}")
            task_state.set("n", i)
            task_state.set("blob", blob(i))
            count = asset_state.increment("count")
            emit(f"ack s {i} {count}")
            i += 1

    return dag


async def main(db: str, synchronous: str) -> None:
    emit("start")
    # Each child resumes the run the killed one left: a short lease lets it take the
    # instances over after a second, not the default 30.
    async with open_runtime(db, synchronous=synchronous, lease_timeout=1.0) as rt:
        await rt.run_dag(build(), run_id="crash")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
