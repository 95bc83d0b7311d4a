"""A runtime in a process of its own, for tests/runtime/test_isolation_lifetime.py.

Usage: ``python lifetime_runtime.py MODE SOCKET``. It runs the isolated task
``lifetime.waits_for_release``, which connects to the Unix socket ``SOCKET`` this
script listens on and sends its pid.

- ``release``: once the task process is running (it connects only after it set itself
  up), trio's idle worker threads are made to exit after 10 ms instead of 10 s, woken,
  and joined (the one that started the process among them); then the task is
  released. Prints ``joined N``, then the task instance's state and result
  (``success released``).
- ``kill``: prints ``child PID`` and waits to be killed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import trio
import trio._core._thread_cache

from stateward import MemoryStore, open_runtime
from stateward._loader import load_dags

FIXTURE = Path(__file__).parents[1] / "isolation_fixtures" / "lifetime.py"


async def end_trio_worker_threads() -> int:
    """Make trio's cached worker threads exit; return how many there were."""
    trio._core._thread_cache.IDLE_TIMEOUT = 0.01  # type: ignore[attr-defined]
    workers = [t for t in threading.enumerate() if t.name.startswith("Trio thread")]
    # Each idle worker waits out the timeout it read when it went idle: give every one
    # a job at once, so each waits again with the short timeout, then exits.
    async with trio.open_nursery() as nursery:
        for _ in workers:
            nursery.start_soon(trio.to_thread.run_sync, lambda: None)
    workers = [t for t in threading.enumerate() if t.name.startswith("Trio thread")]
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            raise SystemExit(f"trio worker {worker.name} did not exit")
    return len(workers)


async def main(mode: str, path: str) -> None:
    task = load_dags(FIXTURE)["lifetime"].get_task("waits_for_release")
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(path)
    listener.listen()
    async with open_runtime(store=MemoryStore()) as rt, trio.open_nursery() as nursery:
        results = []

        async def run() -> None:
            results.append(await rt.run_task(task, run_id="r"))

        nursery.start_soon(run)
        conn, _ = await listener.accept()
        pid = (await conn.recv(64)).decode().strip()
        if mode == "kill":
            print(f"child {pid}", flush=True)
            await trio.sleep_forever()
        # Blocking trio's thread here is fine: the task process waits for our word.
        print(f"joined {await end_trio_worker_threads()}", flush=True)
        await conn.send(b"released")
        conn.close()
    (ti,) = results
    print(ti.state, ti.result if ti.error is None else repr(ti.error), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
