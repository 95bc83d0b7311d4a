"""Isolated tasks whose state calls overlap: async tasks, worker threads, cancellation.

A task process has no task of its own reading its socket: whoever waits for a response
reads it, and hands the reading over when it has its answer. These tasks make many
callers wait at once, in trio and in threads, and stop some while they wait.
"""

from __future__ import annotations

import threading
from typing import Any

import trio

from stateward import Dag

overlap = Dag("overlap", default_args={"isolation": "process"})

ROUNDS = 40


@overlap.task
async def tasks_and_threads(task_state: Any) -> dict[str, Any]:
    """Async tasks and trio worker threads read and write their own keys at once."""
    seen: dict[str, list[Any]] = {}

    async def in_trio(name: str) -> None:
        got = seen.setdefault(name, [])
        for i in range(ROUNDS):
            await task_state.aset(name, i)
            got.append(await task_state.aget(name))

    def in_thread(name: str) -> None:
        got = seen.setdefault(name, [])
        for i in range(ROUNDS):
            task_state.set(name, i)
            got.append(task_state.get(name))

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(in_trio, f"a{n}")
            nursery.start_soon(trio.to_thread.run_sync, in_thread, f"t{n}")
    return seen


@overlap.task
def plain_threads(task_state: Any) -> dict[str, Any]:
    """A plain-function task whose threads call at once (each reads in its turn)."""
    seen: dict[str, list[Any]] = {}

    def work(name: str) -> None:
        got = seen.setdefault(name, [])
        for i in range(ROUNDS):
            task_state.set(name, {"i": i, "name": name})
            got.append(task_state.get(name)["i"])

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    work("main")
    for thread in threads:
        thread.join()
    return seen


@overlap.task
async def cancelled_while_waiting(task_state: Any) -> dict[str, Any]:
    """Callers stopped while they wait (one of them reading) leave the others served."""
    await task_state.aset("k", "v")
    answers: list[Any] = []
    cancelled = 0

    async def read(stop: bool) -> None:
        nonlocal cancelled
        with trio.CancelScope() as scope:
            if stop:
                scope.cancel()  # at its first wait: it has sent its request
            answers.append(await task_state.aget("k"))
        cancelled += scope.cancelled_caught

    for _ in range(10):
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(read, n % 2 == 0)
    # The answers to the stopped requests came and were dropped; calls go on.
    await task_state.aset("k", "w")
    return {"answers": answers, "cancelled": cancelled, "after": await task_state.aget("k")}


@overlap.task
async def calls_in_a_loop(task_state: Any) -> dict[str, int]:
    """A task calling in a loop, alone in the process, still lets the tasks it started
    run, and is cancelled by them: its calls are schedule points now and then."""
    await task_state.aset("k", 1)
    calls = {"before_sibling_ran": 0, "before_cancelled": 0}
    ran = trio.Event()

    async def sibling() -> None:
        ran.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sibling)
        while not ran.is_set() and calls["before_sibling_ran"] < 10_000:
            await task_state.aget("k")
            calls["before_sibling_ran"] += 1

    with trio.CancelScope() as scope:

        async def stop() -> None:
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop)
            while calls["before_cancelled"] < 10_000:
                await task_state.aget("k")
                calls["before_cancelled"] += 1
    return calls


@overlap.task
async def reads_its_writes(task_state: Any) -> int:
    """Each read, served by the runtime's relay at once (no write of the process in
    flight), sees the write the process made just before it."""
    for i in range(300):
        await task_state.aset(f"k{i % 3}", i)
        got = await task_state.aget(f"k{i % 3}")
        if got != i:
            msg = f"read {got!r} after writing {i!r}"
            raise AssertionError(msg)
    return i
