"""Supervisor death: every task actor is stopped, every caller is told why, nothing hangs."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio

from stateward import Dag, Runtime, SupervisorDiedError, open_runtime
from stateward._protocol import messages as m
from stateward.store import base as ops
from stateward.store.base import Store

from ._support import (
    DelegatingStore,
    SubmitLog,
    busy_thread_count,
    live_task_count,
    threads_left_over,
)

DIED = r"the state supervisor died \(Meltdown: the storage controller melted\); the run was stopped"


class Meltdown(BaseException):
    """Not an Exception: it gets past the supervisor's per-batch error handling."""


class MeltingStore(DelegatingStore):
    """Serves normally until a batch writes the key ``melt``: that batch waits for
    ``release`` (so other requests can queue up behind it), then raises Meltdown."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.melting = trio.Event()
        self.release = trio.Event()

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        # An attempt's write comes fenced by its lease: look inside.
        if any(getattr(getattr(op, "op", op), "key", None) == "melt" for op in batch):
            self.melting.set()
            await self.release.wait()
            msg = "the storage controller melted"
            raise Meltdown(msg)
        return await self.inner.execute(batch, now=now)


class Cues:
    """How the doomed run's tasks and the test wait for each other (no timing).

    The sync tasks run in worker threads: they report through trio's thread and wait
    on a thread event.
    """

    def __init__(self) -> None:
        self.started: list[str] = []
        self._wrote = 0
        #: Every blocked lane and looping have had a write answered.
        self.everyone_wrote = trio.Event()
        #: The melting batch is in the store: later requests queue behind it.
        self.melting = threading.Event()

    def wrote(self) -> None:
        """A sync task's write was answered (in trio's thread)."""
        self._wrote += 1
        if self._wrote == 4:  # the three blocked lanes and looping
            self.everyone_wrote.set()

    def unblock(self) -> None:
        """Let every task go on (after a test's wait timed out, so that it fails)."""
        self.everyone_wrote.set()
        self.melting.set()


def doomed_dag(cues: Cues) -> Dag:
    """One task melts the store once the others have written; sync tasks then wait in
    worker threads behind the melting batch; one async task sleeps."""
    dag = Dag("doomed", default_args={"retries": 3, "retry_delay": 0})

    @dag.task
    async def melter(task_state: Any) -> None:
        await cues.everyone_wrote.wait()
        await task_state.aset("melt", 1)

    @dag.task
    def blocked(task_state: Any, lane: int) -> None:
        cues.started.append(f"blocked[{lane}]")
        task_state.set("x", lane)
        trio.from_thread.run_sync(cues.wrote)
        cues.melting.wait()
        task_state.set("never", lane)  # queued behind the melting batch

    blocked.expand(lane=[0, 1, 2])

    @dag.task
    def looping(task_state: Any) -> None:
        task_state.increment("n")
        trio.from_thread.run_sync(cues.wrote)
        while True:  # only an error from the state layer ends this task
            task_state.increment("n")

    @dag.task
    async def sleeper() -> None:
        await trio.sleep_forever()

    @dag.task
    def downstream() -> None:
        cues.started.append("downstream")

    sleeper >> downstream
    return dag


async def test_supervisor_death_stops_the_run_and_says_why(
    make_store: Callable[[], Store],
) -> None:
    """Supervisor death: run_dag and leaving raise SupervisorDiedError; nothing is left."""
    threads_before = set(threading.enumerate())
    busy_before = busy_thread_count()
    tasks_before = live_task_count()
    store = MeltingStore(make_store())
    cues = Cues()

    async def scenario(rt: Runtime) -> None:
        log = SubmitLog(rt.supervisor)
        lanes_queued = log.when(lambda _: log.requests(m.SetTaskState, "never") == 3)

        async def melt_when_everyone_waits() -> None:
            try:
                with trio.fail_after(60):  # fails, rather than hangs, if a cue never comes
                    await store.melting.wait()
                    cues.melting.set()
                    await lanes_queued.wait()
            finally:
                cues.unblock()
                store.release.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(melt_when_everyone_waits)
            with pytest.raises(SupervisorDiedError, match=DIED) as on_run:
                await rt.run_dag(doomed_dag(cues), run_id="r")
        assert isinstance(on_run.value.__cause__, Meltdown)
        assert sorted(cues.started) == ["blocked[0]", "blocked[1]", "blocked[2]"]
        await log.all_answered()
        # A later run fails at once, the same way, instead of hanging.
        with pytest.raises(SupervisorDiedError, match=DIED):
            await rt.run_dag(doomed_dag(cues), run_id="r2")
        with pytest.raises(SupervisorDiedError, match=DIED):
            await rt.state.task("doomed", "r", "melter").aget("melt")
        await log.all_answered()

    with pytest.raises(SupervisorDiedError, match=DIED) as on_exit:
        await in_runtime(store, scenario)
    assert isinstance(on_exit.value.__cause__, Meltdown)
    assert "downstream" not in cues.started
    assert live_task_count() == tasks_before
    assert threads_left_over(threads_before) == []
    assert busy_thread_count() == busy_before


async def test_supervisor_death_outside_a_run_is_reported_on_leaving(
    make_store: Callable[[], Store],
) -> None:
    """A death from an out-of-band write is reported to the caller and on leaving."""
    threads_before = set(threading.enumerate())
    store = MeltingStore(make_store())
    store.release.set()

    async def scenario(rt: Runtime) -> None:
        state = rt.state.task("d", "r", "t")
        await state.aset("kept", 1)
        with pytest.raises(SupervisorDiedError, match=DIED):
            await state.aset("melt", 1)
        with pytest.raises(SupervisorDiedError, match=DIED):
            await trio.to_thread.run_sync(state.get, "kept")

    with pytest.raises(SupervisorDiedError, match=DIED):
        await in_runtime(store, scenario)
    assert threads_left_over(threads_before) == []
    async with open_runtime(store=store.inner) as rt:
        assert await rt.state.task("d", "r", "t").aitems() == [("kept", 1)]


async def in_runtime(store: Store, scenario: Callable[[Runtime], Awaitable[None]]) -> None:
    """Run ``scenario`` inside ``open_runtime(store=store)``."""
    async with open_runtime(store=store) as rt:
        await scenario(rt)
