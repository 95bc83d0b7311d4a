"""An isolated attempt lives as long as it runs, and no longer than its runtime.

The task process used to be tied to the thread that started it (``PR_SET_PDEATHSIG``),
and trio starts processes from cached worker threads that exit after 10 s idle: every
isolated attempt was killed after about 10 s.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from stateward import MemoryStore, open_runtime
from stateward._loader import load_dags

HERE = Path(__file__).parent
FIXTURE = HERE.parent / "isolation_fixtures" / "lifetime.py"


def start_runtime(mode: str, tmp_path: Path) -> subprocess.Popen[str]:
    """The runtime script in a process of its own, its task process on our socket path."""
    sock = tmp_path / "task.sock"
    return subprocess.Popen(
        [sys.executable, str(HERE / "lifetime_runtime.py"), mode, str(sock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LIFETIME_SOCKET": str(sock)},
    )


def test_an_attempt_outlives_the_thread_that_started_its_process(tmp_path: Path) -> None:
    """The thread that started the task process exits while the attempt runs; the
    attempt goes on and succeeds."""
    proc = start_runtime("release", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    joined, outcome = out.splitlines()
    assert joined.startswith("joined ")
    assert int(joined.split()[1]) >= 1
    assert outcome == "success released", err


def test_the_task_process_dies_with_its_runtime(tmp_path: Path) -> None:
    """SIGKILL of the runtime's process ends its task process at once."""
    proc = start_runtime("kill", tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("child "), proc.stderr.read() if proc.stderr else ""
        pidfd = os.pidfd_open(int(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(30_000), "the task process outlived its runtime"
    finally:
        os.close(pidfd)


@pytest.mark.long
async def test_isolated_attempts_of_a_minute_succeed() -> None:
    """A task process that sleeps 60 s and one that keeps a CPU busy 60 s both succeed."""
    dag = load_dags(FIXTURE)["lifetime"]
    params = {"seconds": 60.0}
    async with open_runtime(store=MemoryStore()) as rt, trio.open_nursery() as nursery:
        results = {}

        async def run(task_id: str) -> None:
            results[task_id] = await rt.run_task(dag.get_task(task_id), params=params)

        for task_id in ("sleeps", "spins"):
            nursery.start_soon(run, task_id)
    assert results["sleeps"].state == "success", results["sleeps"].error
    assert results["sleeps"].result == "slept"
    assert results["spins"].state == "success", results["spins"].error
    assert results["spins"].try_number == 1


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def test_a_killed_runtime_leaves_no_fork_server_behind(tmp_path: Path) -> None:
    """SIGKILL of the runtime's process ends the template that forked its task process
    too, and the task process with it."""
    proc = start_runtime("kill", tmp_path)
    pidfds = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("child "), proc.stderr.read() if proc.stderr else ""
        child = int(line.split()[1])
        template = _parent_of(child)
        assert template != proc.pid  # forked from the template, not started by the runtime
        assert _parent_of(template) == proc.pid
        pidfds = [os.pidfd_open(child), os.pidfd_open(template)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    try:
        for pidfd in pidfds:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            assert poller.poll(30_000), "a process outlived its runtime"
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
