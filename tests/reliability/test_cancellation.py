"""Cancellation: cancelling a run (or the whole runtime) mid-write leaves each write
applied whole or not at all, and leaves no request unanswered.

Writers loop on large values, counters and a compare-and-set "transfer" that keeps a sum
constant inside one value. Each records what was acknowledged; after the cancel, stored
state must be the last acknowledged write or the one that was in flight, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

from stateward import Asset, Dag, Runtime, open_runtime
from stateward.store.base import Store

from ._support import SubmitLog

POOL = Asset("pool", "mem://pool")
TOTAL = 1_000
PAD = 30_000  # spans SQLite overflow pages: a torn write would show
ASYNC_LANES, SYNC_LANES = 6, 2
QUICK_POINTS = [5, 120]
LONG_POINTS = [1, 2, 3, 7, 13, 25, 40, 80, 120, 160, 200, 300, 400, 500, 700, 900]


def blob(lane: str, i: int) -> dict[str, Any]:
    return {"lane": lane, "i": i, "pad": f"{lane}:{i};" * (PAD // 8)}


class Progress:
    """What every lane had acknowledged, and an event once enough writes were."""

    def __init__(self, target: int, token: trio.lowlevel.TrioToken) -> None:
        self.blob: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.pairs: list[dict[str, int]] = [{"a": TOTAL, "b": 0}]
        self.acks = 0
        self.target = target
        self.enough = trio.Event()
        self.stop = threading.Event()  # sync lanes run in threads: they check this
        self._token = token
        self._lock = threading.Lock()

    def ack(self) -> None:
        with self._lock:
            self.acks += 1
            reached = self.acks == self.target
        if reached:
            if trio.lowlevel.in_trio_run():
                self.enough.set()
            else:
                self._token.run_sync_soon(self.enough.set)


def transfer(pair: dict[str, int], lane: int, i: int) -> dict[str, int]:
    """Move a few units between the two halves: the sum stays TOTAL."""
    amount = (lane * 7 + i) % 5 + 1
    moved = min(amount, pair["a"]) if i % 2 == 0 else -min(amount, pair["b"])
    return {"a": pair["a"] - moved, "b": pair["b"] + moved}


def writers(progress: Progress) -> Dag:
    """Async and sync lanes that write, increment and transfer until stopped."""
    dag = Dag("cancel")

    @dag.task(outlets=[POOL])
    async def lane(task_state: Any, asset_state: Any, n: int) -> None:
        name, i = f"a{n}", 0
        while True:
            await task_state.aset("blob", blob(name, i))
            progress.blob[name] = i
            progress.count[name] = await task_state.aincrement("count")
            pair = await asset_state.aget("pair")
            proposal = transfer(pair, n, i)
            progress.pairs.append(proposal)  # before the write: it may land unacknowledged
            await asset_state.acompare_and_set("pair", pair, proposal)
            progress.ack()
            i += 1

    lane.expand(n=list(range(ASYNC_LANES)))

    @dag.task(outlets=[POOL])
    def threaded(task_state: Any, asset_state: Any, n: int) -> None:
        name, i = f"s{n}", 0
        while not progress.stop.is_set():
            task_state.set("blob", blob(name, i))
            progress.blob[name] = i
            progress.count[name] = task_state.increment("count")
            progress.ack()
            i += 1

    threaded.expand(n=list(range(SYNC_LANES)))
    return dag


async def check_state(rt: Runtime, progress: Progress) -> None:
    """Every value is one a writer wrote, whole; counters are exact up to one in flight."""
    for name, acked in progress.blob.items():
        task, index = ("lane", int(name[1:])) if name[0] == "a" else ("threaded", int(name[1:]))
        state = rt.state.task("cancel", "c", task, index)
        value = await state.aget("blob")
        assert value == blob(name, value["i"]), f"{name}: torn value"
        assert value["i"] in (acked, acked + 1), (name, value["i"], acked)
        count = await state.aget("count", 0)
        acked_count = progress.count.get(name, 0)
        assert count in (acked_count, acked_count + 1), (name, count, acked_count)
    pair = await rt.state.asset(POOL).aget("pair")
    assert pair["a"] + pair["b"] == TOTAL
    assert pair in progress.pairs


async def seed(rt: Runtime) -> None:
    await rt.state.asset(POOL).aset("pair", {"a": TOTAL, "b": 0})


async def cancel_run_after(make_store: Callable[[], Store], target: int) -> dict[str, int]:
    """Cancel run_dag once ``target`` iterations were acknowledged; check, then close."""
    async with open_runtime(store=make_store()) as rt:
        await seed(rt)
        log = SubmitLog(rt.supervisor)
        progress = Progress(target, trio.lowlevel.current_trio_token())
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_enough() -> None:
                    await progress.enough.wait()
                    progress.stop.set()
                    scope.cancel()

                nursery.start_soon(cancel_when_enough)
                await rt.run_dag(writers(progress), run_id="c")
        assert scope.cancelled_caught
        await log.all_answered()  # cancelled callers' requests are answered too
        assert rt.stats.requests >= len(log.envelopes) > 0
        await check_state(rt, progress)
        return {"acked": progress.acks, "requests": len(log.envelopes)}


@pytest.mark.parametrize("target", QUICK_POINTS)
async def test_cancelling_a_run_leaves_every_write_whole(
    make_store: Callable[[], Store], target: int
) -> None:
    """A run cancelled mid-write: values whole, counters exact +0/+1, sum kept, all answered."""
    figures = await cancel_run_after(make_store, target)
    assert figures["acked"] >= target


@pytest.mark.long
@pytest.mark.parametrize("target", LONG_POINTS)
async def test_cancelling_a_run_at_many_points(
    make_store: Callable[[], Store], target: int
) -> None:
    """The same guarantees at many more cancel points."""
    figures = await cancel_run_after(make_store, target)
    assert figures["acked"] >= target


@pytest.mark.parametrize("target", QUICK_POINTS)
async def test_cancelling_the_whole_runtime_leaves_every_write_whole(
    make_store: Callable[[], Store], target: int
) -> None:
    """The open_runtime block cancelled mid-write: the same, checked after reopening."""
    log: SubmitLog | None = None
    progress: Progress | None = None
    with trio.CancelScope() as scope:
        async with open_runtime(store=make_store()) as rt, trio.open_nursery() as nursery:
            await seed(rt)
            log = SubmitLog(rt.supervisor)
            progress = Progress(target, trio.lowlevel.current_trio_token())

            async def cancel_when_enough() -> None:
                assert progress is not None
                await progress.enough.wait()
                scope.cancel()

            nursery.start_soon(cancel_when_enough)
            await rt.run_dag(writers(progress), run_id="c")
    assert scope.cancelled_caught
    assert log is not None
    assert progress is not None
    assert log.unanswered() == []
    async with open_runtime(store=make_store()) as rt:
        await check_state(rt, progress)
