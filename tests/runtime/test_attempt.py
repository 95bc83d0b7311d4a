"""An attempt's accessors end with the attempt: nothing left behind can reach its state."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from stateward import AttemptEndedError, Dag, MemoryStore, StateScopeError, open_runtime

ENDED = r"^late\.{task} try {n} has ended, so its task_state and asset_state can no longer"


class Late:
    """A thread a task leaves running: it writes when released and keeps what it met."""

    def __init__(self, task_state: Any, key: str) -> None:
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(task_state, key))
        self._thread.start()

    def _run(self, task_state: Any, key: str) -> None:
        self.release.wait()
        try:
            task_state.set(key, "late")
        except BaseException as exc:
            self.error = exc

    def write_now(self) -> BaseException | None:
        """Release the thread and wait until it has tried to write (blocks)."""
        self.release.set()
        self._thread.join()
        return self.error


async def test_a_thread_that_outlives_its_task_cannot_write() -> None:
    """A thread writing after its task returned is refused; the key is not written."""
    dag = Dag("late")
    left: list[Late] = []

    @dag.task
    def leaves_a_thread(task_state: Any) -> None:
        left.append(Late(task_state, "after"))

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(leaves_a_thread, run_id="r")
        error = await trio.to_thread.run_sync(left[0].write_now)
        assert await rt.state.task("late", "r", "leaves_a_thread").aget("after") is None
    assert ti.state == "success"
    assert isinstance(error, AttemptEndedError)
    assert (error.task, error.try_number) == ("late.leaves_a_thread", 1)
    with pytest.raises(AttemptEndedError, match=ENDED.format(task="leaves_a_thread", n=1)):
        raise error


async def test_a_thread_of_try_1_cannot_write_during_try_2_nor_after_the_clear() -> None:
    """Try 2 releases try 1's thread: refused; try 2's thread after clear_state_on_success too."""
    dag = Dag("late")
    left: dict[int, Late] = {}

    @dag.task(retries=1, retry_delay=0, clear_state_on_success=True)
    def flaky(task_state: Any, ti: Any) -> Any:
        left[ti.try_number] = Late(task_state, f"from_try_{ti.try_number}")
        if ti.try_number == 1:
            raise RuntimeError("try 1 fails")
        task_state.set("kept_by_try_2", True)
        left[1].write_now()
        return task_state.get("from_try_1")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(flaky, run_id="r")
        error = await trio.to_thread.run_sync(left[2].write_now)
        assert await rt.state.task("late", "r", "flaky").aitems() == []
    assert (ti.state, ti.try_number, ti.result) == ("success", 2, None)
    assert isinstance(left[1].error, AttemptEndedError)
    assert left[1].error.try_number == 1
    assert isinstance(error, AttemptEndedError)
    with pytest.raises(AttemptEndedError, match=ENDED.format(task="flaky", n=2)):
        raise error


async def test_an_accessor_kept_past_its_async_task_is_refused() -> None:
    """Async twins refuse too, and the error is a RuntimeError as well as a StatewardError."""
    dag = Dag("late")
    kept: list[Any] = []

    @dag.task
    async def keeps(task_state: Any) -> None:
        await task_state.aset("during", 1)
        kept.append(task_state)

    async with open_runtime(store=MemoryStore()) as rt:
        await rt.run_task(keeps, run_id="r")
        with pytest.raises(AttemptEndedError, match=ENDED.format(task="keeps", n=1)):
            await kept[0].aset("after", 1)
        with pytest.raises(RuntimeError):
            await kept[0].aget("during")
        assert await rt.state.task("late", "r", "keeps").aitems() == [("during", 1)]


def test_attempt_ended_is_not_a_scope_error() -> None:
    """A late call is a lifecycle error, not a refusal of scope."""
    assert not issubclass(AttemptEndedError, StateScopeError)


async def test_attempt_threads_are_limited_as_trios_default_limiter_limits_them() -> None:
    """Two slots: a third borrower waits for a slot given back, and one cancelled while it
    waits takes none away from the next."""
    from stateward._runtime.attempt import _ThreadSlots

    slots = _ThreadSlots(2)
    held: list[str] = []

    async def borrow(name: str) -> None:
        await slots.acquire_on_behalf_of(name)
        held.append(name)

    async with trio.open_nursery() as nursery:
        await borrow("a")
        await borrow("b")
        cancelled = trio.CancelScope()

        async def cancelled_while_waiting() -> None:
            with cancelled:
                await borrow("cancelled")

        nursery.start_soon(cancelled_while_waiting)
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()
        nursery.start_soon(borrow, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["a", "b"]  # c waits for a slot
        slots.release_on_behalf_of("a")
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["a", "b", "c"]
    slots.release_on_behalf_of("b")
    slots.release_on_behalf_of("c")
    await borrow("d")  # both slots are free again: taken at once
    await borrow("e")
    assert held[-2:] == ["d", "e"]
