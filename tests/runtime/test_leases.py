"""Leases and fencing in one process, on every store: the runtime's side of them.

The other runtime is played by the test through the admin client (what a second
process would send); the multi-process versions are in tests/reliability/test_leases.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from stateward import (
    Dag,
    DagRunResult,
    MemoryStore,
    RecordedTaskError,
    Runtime,
    StaleAttemptError,
    Store,
    StoreError,
    open_runtime,
)
from stateward._loader import load_dags
from stateward._protocol import messages as m
from stateward._records import AttemptRecord
from stateward.store import base as ops

#: The runtime that takes instances over in these tests (its acquisition is sent by hand).
OTHER = "another-runtime"
OTHER_START = AttemptRecord(0, "running", 1.0, host="elsewhere", pid=1)


async def take_over(rt: Runtime, dag_id: str, task_id: str, map_index: int = -1) -> None:
    """Expire ``rt``'s leases and take the instance over as another runtime's try 2:
    both queued together (no checkpoint between), so this runtime's lease expires on
    the store's clock just before the other runtime's acquisition finds it so."""
    expire = rt.admin.submit(m.RenewTaskLeases(rt.leases.holder, -1.0))
    take = rt.admin.submit(
        m.AcquireTaskLease(dag_id, "r", task_id, map_index, OTHER, 60.0, 0, OTHER_START)
    )
    await rt.admin.response(expire)
    assert (await rt.admin.response(take)).answer.try_number == 2


async def end_as_other(
    rt: Runtime, dag_id: str, task_id: str, attempt: AttemptRecord, map_index: int = -1
) -> None:
    """Record the other runtime's try ending as ``attempt`` says."""
    await rt.admin.request(
        m.RecordTaskAttempt(dag_id, "r", task_id, map_index, attempt.state, attempt, OTHER)
    )


@contextlib.asynccontextmanager
async def running(rt: Runtime, dag: Dag) -> AsyncIterator[list[DagRunResult]]:
    """Run ``dag`` as run ``r`` in the background while the block plays the other
    runtime; when the block ends the run has ended too, and the list holds its result."""
    result: list[DagRunResult] = []

    async def run() -> None:
        result.append(await rt.run_dag(dag, run_id="r"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield result


@pytest.mark.parametrize("value", [0, -1.5, float("inf"), float("nan"), timedelta(0)])
async def test_a_lease_timeout_must_be_positive(value: Any) -> None:
    """A lease timeout that is not a positive, finite duration is refused, saying why."""
    with pytest.raises(ValueError, match="lease_timeout must be a positive, finite duration"):
        async with open_runtime("memory:", lease_timeout=value):
            pass


@pytest.mark.parametrize("value", ["30", None, True])
async def test_a_lease_timeout_must_be_a_duration(value: Any) -> None:
    """A lease timeout of another type is a TypeError naming it."""
    with pytest.raises(TypeError, match="lease_timeout must be seconds"):
        async with open_runtime("memory:", lease_timeout=value):
            pass


async def test_a_lease_timeout_may_be_a_timedelta() -> None:
    """A timedelta is taken as its seconds."""
    async with open_runtime("memory:", lease_timeout=timedelta(minutes=2)) as rt:
        assert rt.leases.timeout == 120.0


def one_instance_dag(ran: list[int], started: trio.Event, gate: trio.Event | None = None) -> Dag:
    """A Dag of one async task that sets ``started``, waits for ``gate`` (if any),
    writes its try number to its state and notes it in ``ran``."""
    dag = Dag("one")

    @dag.task
    async def work(task_state: Any, ti: Any) -> int:
        started.set()
        if gate is not None:
            await gate.wait()
        await task_state.aset("try", ti.try_number)
        ran.append(ti.try_number)
        return int(ti.try_number)

    return dag


@contextlib.asynccontextmanager
async def running_task(rt: Runtime, dag: Dag) -> AsyncIterator[list[Any]]:
    """``rt.run_task`` of ``dag``'s task ``work`` as run ``r``, in the background while
    the block plays the other runtime; when the block ends so has the one-instance run,
    the list holding its result and the instance's recorded tries ``(number, state)``."""
    out: list[Any] = []

    async def run() -> None:
        out.append(await rt.run_task(dag.tasks["work"], run_id="r"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield out
    record = await rt.runs.get("one", "r")
    assert record is not None
    out.append([(a.try_number, a.state) for a in record.instances[0].attempts])


@contextlib.contextmanager
def logged(text: str) -> Iterator[trio.Event]:
    """An event set when the runner logs a record containing ``text``."""
    seen = trio.Event()

    class Cue(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()  # the runner logs in trio's thread

    handler = Cue()
    runner = logging.getLogger("stateward.runner")
    runner.addHandler(handler)
    try:
        yield seen
    finally:
        runner.removeHandler(handler)


async def test_run_task_waits_for_an_attempt_another_runtime_holds_then_runs_again(
    make_store: Callable[[], Store],
) -> None:
    """rt.run_task takes the instance's lease as a run does: while another runtime's
    attempt holds it, the one-instance run waits and says so; once that attempt ends
    (a success included), it runs the instance again as the next try."""
    ran: list[int] = []
    dag = one_instance_dag(ran, trio.Event())
    with trio.fail_after(60), logged("is being run by another attempt") as waiting:
        async with open_runtime(store=make_store(), lease_timeout=2.0) as rt:
            take = m.AcquireTaskLease("one", "r", "work", -1, OTHER, 60.0, 0, OTHER_START)
            assert (await rt.admin.request(take)).answer.try_number == 1
            async with running_task(rt, dag) as out:
                await waiting.wait()
                assert ran == []
                done = AttemptRecord(1, "success", 1.0, 2.0, host="elsewhere", pid=1)
                await end_as_other(rt, "one", "work", done)
    result, tries = out
    assert ran == [2]
    assert (result.state, result.try_number, result.result) == ("success", 2, 2)
    assert tries == [(1, "success"), (2, "success")]


async def test_run_tasks_writes_are_fenced_once_another_runtime_takes_it_over(
    make_store: Callable[[], Store],
) -> None:
    """An attempt of rt.run_task whose lease another runtime took over (after it
    expired) cannot write: its write is refused as stale and writes nothing, and the
    one-instance run reports the other runtime's try."""
    ran: list[int] = []
    started, gate = trio.Event(), trio.Event()
    dag = one_instance_dag(ran, started, gate)
    with trio.fail_after(60):
        async with open_runtime(store=make_store(), lease_timeout=2.0) as rt:
            async with running_task(rt, dag) as out:
                await started.wait()
                await take_over(rt, "one", "work")
                gate.set()
                done = AttemptRecord(2, "success", 1.0, 2.0, host="elsewhere", pid=1)
                await end_as_other(rt, "one", "work", done)
            state = await rt.state.task("one", "r", "work").aget("try")
    result, tries = out
    assert (ran, state) == ([], None)
    assert (result.state, result.try_number) == ("success", 2)
    assert tries == [(1, "abandoned"), (2, "success")]


async def test_a_late_threads_write_is_refused_as_stale_and_writes_nothing(
    make_store: Callable[[], Store],
) -> None:
    """A thread an attempt left behind writes after the instance ended: it gets a
    StaleAttemptError (AttemptEndedError is one) and nothing is written."""
    dag = Dag("late")
    release, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def late(task_state: Any) -> None:
        release.wait()
        try:
            task_state.set("late", 1)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    @dag.task
    def leaves_a_thread(task_state: Any) -> None:
        threading.Thread(target=late, args=(task_state,)).start()

    async with open_runtime(store=make_store()) as rt:
        assert (await rt.run_dag(dag, run_id="r")).state == "success"
        release.set()
        await trio.to_thread.run_sync(done.wait)
        assert await rt.state.task("late", "r", "leaves_a_thread").aget("late") is None
    (error,) = errors
    assert isinstance(error, StaleAttemptError)
    assert (error.task, error.try_number) == ("late.leaves_a_thread", 1)


async def test_an_attempt_whose_instance_was_taken_over_cannot_write(
    make_store: Callable[[], Store],
) -> None:
    """Another runtime takes the instance over (the lease expired): the attempt's next
    write is refused with StaleAttemptError and lands nowhere; its end is not recorded;
    the run waits for the new holder and reports its outcome."""
    dag = Dag("taken")
    started, taken = trio.Event(), trio.Event()
    refused: list[StaleAttemptError] = []

    @dag.task
    async def work(task_state: Any) -> str:
        await task_state.aset("before", 1)
        started.set()
        await taken.wait()
        try:
            await task_state.aset("after", 1)
        except StaleAttemptError as exc:
            refused.append(exc)
            raise
        return "mine"

    async with open_runtime(store=make_store()) as rt:
        async with running(rt, dag) as result:
            await started.wait()
            await take_over(rt, "taken", "work")
            taken.set()
            ended = AttemptRecord(2, "success", 1.0, 2.0, result="theirs", host="elsewhere")
            await end_as_other(rt, "taken", "work", ended)
        state = rt.state.task("taken", "r", "work")
        assert (await state.aget("before"), await state.aget("after")) == (1, None)
        record = await rt.runs.get("taken", "r")
    (error,) = refused
    assert "try 1 no longer holds the instance" in str(error)
    (ti,) = result[0].task_instances
    assert (result[0].state, ti.try_number, ti.result) == ("success", 2, "theirs")
    assert record is not None
    assert [(a.try_number, a.state) for a in record.instances[0].attempts] == [
        (1, "abandoned"), (2, "success"),
    ]  # fmt: skip


async def test_a_failure_in_another_runtime_is_reported_with_its_recorded_error(
    make_store: Callable[[], Store],
) -> None:
    """An instance another runtime took over and failed is this run's failure too: its
    result carries a RecordedTaskError with the recorded error's type and message."""
    dag = Dag("taken")
    started, taken = trio.Event(), trio.Event()

    @dag.task
    async def work() -> str:
        started.set()
        await taken.wait()
        return "mine"

    async with open_runtime(store=make_store()) as rt, running(rt, dag) as result:
        await started.wait()
        await take_over(rt, "taken", "work")
        taken.set()
        failed = AttemptRecord(
            2, "failed", 1.0, 2.0, host="elsewhere", error_type="KeyError",
            error_message="'gone'", error_traceback="Traceback ...",
        )  # fmt: skip
        await end_as_other(rt, "taken", "work", failed)
    (ti,) = result[0].task_instances
    assert (result[0].state, ti.state, ti.try_number) == ("failed", "failed", 2)
    assert isinstance(ti.error, RecordedTaskError)
    assert (ti.error.error_type, ti.error.error_message) == ("KeyError", "'gone'")
    assert ti.error.error_traceback == "Traceback ..."
    assert str(ti.error) == "KeyError: 'gone'"


async def test_a_process_isolated_attempt_is_fenced_after_a_takeover(
    make_store: Callable[[], Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt in a task process whose instance another runtime took over: its next
    write, relayed by the parent, is refused with StaleAttemptError in the child and
    lands nowhere; the run reports the new holder's outcome."""
    monkeypatch.setenv("STATEWARD_TEST_FENCE_DIR", str(tmp_path))
    dag = load_dags(Path(__file__).parents[1] / "isolation_fixtures" / "fenced.py")["fenced"]
    async with open_runtime(store=make_store()) as rt:
        async with running(rt, dag) as result:
            with trio.fail_after(60):  # another process: poll its file
                while not (tmp_path / "started").exists():  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await take_over(rt, "fenced", "late_write")
            (tmp_path / "taken").touch()
            with trio.fail_after(60):
                while not (tmp_path / "refused").exists():  # noqa: ASYNC110
                    await trio.sleep(0.02)
            ended = AttemptRecord(2, "success", 1.0, 2.0, result="theirs", host="elsewhere")
            await end_as_other(rt, "fenced", "late_write", ended)
        state = rt.state.task("fenced", "r", "late_write")
        assert (await state.aget("before"), await state.aget("after")) == (1, None)
    (ti,) = result[0].task_instances
    assert (result[0].state, ti.try_number, ti.result) == ("success", 2, "theirs")


async def test_an_instance_another_runtime_holds_does_not_hold_up_the_others(
    make_store: Callable[[], Store],
) -> None:
    """With one slot, the instances after one another runtime holds run while it is held
    (the runtime waits for it aside); its holder's recorded result is this run's."""
    dag = Dag("held", max_active_tasks=1)
    ran: list[int] = []
    others_ran = trio.Event()

    @dag.task
    def shard(i: int) -> int:
        ran.append(i)
        if len(ran) == 2:
            trio.from_thread.run_sync(others_ran.set)
        return i

    shard.expand(i=[0, 1, 2])
    async with open_runtime(store=make_store(), lease_timeout=2.0) as rt:
        first = rt.leases.start_order([0, 1, 2])[0]
        taken = await rt.admin.request(
            m.AcquireTaskLease("held", "r", "shard", first, OTHER, 60.0, 0, OTHER_START)
        )
        assert taken.answer.outcome == "acquired"
        with trio.fail_after(20):
            async with running(rt, dag) as result:
                await others_ran.wait()
                done = AttemptRecord(1, "success", 1.0, 2.0, result=100 + first, host="elsewhere")
                await rt.admin.request(
                    m.RecordTaskAttempt("held", "r", "shard", first, "success", done, OTHER)
                )
    assert sorted(ran) == sorted({0, 1, 2} - {first})
    assert result[0].state == "success"
    assert [ti.result for ti in result[0].task_instances] == [
        100 + i if i == first else i for i in range(3)
    ]


async def test_an_instances_end_record_travels_with_the_next_acquisition(
    make_store: Callable[[], Store],
) -> None:
    """A worker does not wait for an instance's end record before it takes the next
    instance: the record and the next acquisition share one batch, so a run of n
    instances through one slot costs about n batches, not 2n."""
    dag = Dag("chained", max_active_tasks=1)

    @dag.task
    async def shard(i: int) -> int:
        return i

    async with open_runtime(store=make_store()) as rt:
        batches = []
        for run_id, n in (("ten", 10), ("thirty", 30)):
            shard.expand(i=list(range(n)))
            before = rt.stats.batches
            result = await rt.run_dag(dag, run_id=run_id)
            assert [ti.result for ti in result.task_instances] == list(range(n))
            batches.append(rt.stats.batches - before)
            record = await rt.runs.get("chained", run_id)
            assert record is not None
            assert {ti.state for ti in record.instances} == {"success"}
    # 20 instances more: 20 batches more (40 if each end waited for its own commit);
    # the run's own records may take a batch more or less as the scheduler goes.
    assert batches[1] - batches[0] <= 22


async def test_an_instance_whose_end_is_refused_is_waited_for_while_the_worker_goes_on(
    make_store: Callable[[], Store],
) -> None:
    """Another runtime takes a mapped instance over while it runs: its end record is
    refused (learnt with the worker's next acquisition), the worker runs the other
    instances, and the run waits for the new holder and reports its outcome."""
    dag = Dag("lost", max_active_tasks=1)
    started, taken, others_ran = trio.Event(), trio.Event(), trio.Event()
    ran: list[int] = []

    @dag.task
    async def shard(i: int) -> int:
        ran.append(i)
        if len(ran) == 1:
            started.set()
            await taken.wait()
        if len(ran) == 3:
            others_ran.set()
        return i

    shard.expand(i=[0, 1, 2])
    async with open_runtime(store=make_store()) as rt:
        first = rt.leases.start_order([0, 1, 2])[0]
        with trio.fail_after(20):
            async with running(rt, dag) as result:
                await started.wait()
                await take_over(rt, "lost", "shard", first)
                taken.set()
                await others_ran.wait()  # the worker goes on with the others
                ended = AttemptRecord(2, "success", 1.0, 2.0, result="theirs", host="elsewhere")
                await end_as_other(rt, "lost", "shard", ended, first)
        record = await rt.runs.get("lost", "r")
    assert sorted(ran) == [0, 1, 2]
    assert result[0].state == "success"
    assert [(ti.try_number, ti.result) for ti in result[0].task_instances] == [
        (2, "theirs") if i == first else (1, i) for i in range(3)
    ]
    assert record is not None
    attempts = {
        ti.map_index: [(a.try_number, a.state) for a in ti.attempts] for ti in record.instances
    }
    assert attempts[first] == [(1, "abandoned"), (2, "success")]


async def test_the_lease_keeper_starts_with_the_first_lease() -> None:
    """A runtime that holds no lease (one that reads and writes state out of band, a
    test) starts no renewal task; the first lease it takes (a Dag run's) starts it."""
    dag = Dag("keeper")

    @dag.task
    def work() -> int:
        return 1

    async with open_runtime(store=MemoryStore()) as rt:
        await rt.state.task("keeper", "r", "work").aset("k", 1)
        idle = rt.leases._start_keeping is not None
        result = await rt.run_dag(dag, run_id="s")
        started = rt.leases._start_keeping is None
    assert result.state == "success"
    assert idle
    assert started


class StallingRun:
    """A Dag whose attempts stall on their first run (a sync task, an async task, and,
    if ``mapped``, one of 40 quick mapped instances, whose workers take their next
    leases ahead) until :meth:`cancel_mid_attempt` cancels it; on a later run every
    task returns at once."""

    def __init__(self, *, mapped: bool = True) -> None:
        self.stalling = [("sync_task", -1), ("async_task", -1)] + ([("quick", 7)] * mapped)
        self.first_run = True
        self.arrived: list[str] = []
        self.everyone = trio.Event()
        self.gate = threading.Event()
        self.dag = self._dag()

    def _arrive(self, name: str) -> None:
        self.arrived.append(name)
        if len(self.arrived) == len(self.stalling):
            self.everyone.set()

    def _stall(self, name: str) -> None:
        """In a worker thread: arrive, wait for the run to be cancelled, see it."""
        trio.from_thread.run_sync(self._arrive, name)
        assert self.gate.wait(timeout=60), "the run was never cancelled"
        trio.from_thread.check_cancelled()

    def _dag(self) -> Dag:
        dag = Dag("cancelled")

        @dag.task
        def sync_task() -> None:
            if self.first_run:
                self._stall("sync")

        @dag.task
        async def async_task() -> None:
            if self.first_run:
                self._arrive("async")
                await trio.sleep_forever()

        def quick(x: int) -> int:
            if self.first_run and x == 7:
                self._stall("quick")
            return x

        if ("quick", 7) in self.stalling:
            dag.task(quick).expand(x=list(range(40)))
        return dag

    async def cancel_mid_attempt(self, rt: Runtime) -> None:
        """Run the Dag as run ``r`` and cancel it once the three stalling attempts run."""
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def cancel_when_everyone_runs() -> None:
                    await self.everyone.wait()
                    nursery.cancel_scope.cancel()
                    self.gate.set()  # the sync attempts then see the cancellation

                nursery.start_soon(cancel_when_everyone_runs)
                await rt.run_dag(self.dag, run_id="r")
        self.first_run = False

    def check_resumed(self, result: DagRunResult, record: Any) -> None:
        """The resume ran each cancelled instance as try 2, try 1 recorded abandoned."""
        assert result.state == "success"
        assert record is not None
        attempts = {
            (ti.task_id, ti.map_index): [(a.try_number, a.state) for a in ti.attempts]
            for ti in record.instances
        }
        for key in self.stalling:
            assert result.ti(*key).try_number == 2, key
            assert attempts[key] == [(1, "abandoned"), (2, "success")], key


async def test_a_run_cancelled_mid_attempt_resumes_in_the_same_runtime(
    make_store: Callable[[], Store],
) -> None:
    """run_dag cancelled while attempts run (sync, async, and quick mapped instances,
    some of whose leases were taken ahead): every lease the call held is given up at
    once, so the same run id resumes in the same runtime without waiting for them to
    expire; the cancelled tries are recorded abandoned and run again as try 2."""
    stalling = StallingRun()
    async with open_runtime(store=make_store(), lease_timeout=60.0) as rt:
        await stalling.cancel_mid_attempt(rt)
        assert not rt.leases._held
        # Nothing of the holder's is left to renew in the store.
        left = await rt.admin.request(m.RenewTaskLeases(rt.leases.holder, 60.0))
        assert left.held == ()
        with trio.fail_after(30):  # the leases' timeout is 60 s: no waiting for expiry
            result = await rt.run_dag(stalling.dag, run_id="r")
        stalling.check_resumed(result, await rt.runs.get("cancelled", "r"))


class RefusesToGiveUp(MemoryStore):
    """Fails every batch that gives up given leases (a cancelled run call's)."""

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        if any(isinstance(op, ops.ReleaseLeases) and op.leases is not None for op in batch):
            msg = "the disk is full"
            raise StoreError(msg)
        return await super().execute(batch, now=now)


async def test_leases_a_cancelled_run_could_not_give_up_are_given_up_on_closing() -> None:
    """The store fails the cancelled call's release: closing the runtime gives up every
    lease it holds instead, so a new runtime resumes the run at once. (No mapped task:
    a lease taken ahead makes closing give up every lease anyway.)"""
    store = RefusesToGiveUp()
    stalling = StallingRun(mapped=False)
    async with open_runtime(store=store, lease_timeout=60.0) as rt:
        await stalling.cancel_mid_attempt(rt)
    async with open_runtime(store=store, lease_timeout=60.0) as rt:
        with trio.fail_after(30):  # the leases' timeout is 60 s: no waiting for expiry
            result = await rt.run_dag(stalling.dag, run_id="r")
        stalling.check_resumed(result, await rt.runs.get("cancelled", "r"))
