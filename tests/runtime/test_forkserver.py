"""Isolated attempts forked from a template: rogue tasks, what they leave behind, and a
Dag file edited between runs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from stateward import MemoryStore, TaskProcessError, open_runtime
from stateward._loader import load_dags
from stateward._runtime import forkserver
from stateward._runtime.descendants import children as children_of_self
from stateward._runtime.rehearsal import rehearse

from ._processes import wait_for_exit

FIXTURES = Path(__file__).parents[1] / "isolation_fixtures"
ROGUES = FIXTURES / "forking.py"

pytestmark = pytest.mark.skipif(
    not forkserver.fork_server_available(), reason="the fork server needs Linux pidfds"
)


async def run_rogue(task_id: str) -> tuple[Any, Any]:
    """Run one task of the rogues Dag; return its instance and the pid it stored."""
    task = load_dags(ROGUES)["rogues"].get_task(task_id)
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r")
        pid = await rt.state.task("rogues", "r", task_id).aget("pid")
    return ti, pid


async def test_an_attempt_is_forked_from_the_template() -> None:
    """The task process is a child of the template, not of the runtime."""
    ti, _ = await run_rogue("where_am_i")
    pid, parent = ti.result
    assert ti.state == "success", ti.error
    assert os.getpid() not in (pid, parent)


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("forks_children", "the task process for rogues.forks_children try 1 exited with code 3 before reporting a result"),
        ("closes_streams", "rogues.closes_streams try 1 raised ValueError in its task process: the standard streams are closed"),
        ("exits_at_shutdown", "rogues.exits_at_shutdown try 1 raised SystemExit in its task process: 2"),
        ("segfaults", "the task process for rogues.segfaults try 1 was killed by SIGSEGV (a segmentation fault: a crash in native code); it reported no result"),
    ],
)  # fmt: skip
async def test_a_rogue_task_fails_its_try_naming_the_cause(task_id: str, message: str) -> None:
    """Forking, closed streams, an exit at shutdown, a segfault: a failed try saying why."""
    ti, pid = await run_rogue(task_id)
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert isinstance(ti.error, TaskProcessError)
    assert str(ti.error) == message
    if pid is not None:  # what it forked did not outlive it
        await trio.to_thread.run_sync(wait_for_exit, pid)


@pytest.mark.parametrize(
    ("task_id", "state"),
    [("starts_a_session", "success"), ("starts_a_session_then_dies", "failed"), ("daemonizes", "success")],
)  # fmt: skip
async def test_what_an_attempt_started_in_another_session_ends_with_it(
    task_id: str, state: str
) -> None:
    """A process in a session of its own, or a double-forked daemon, is killed when the
    attempt ends, whether the attempt succeeds or is killed."""
    ti, pid = await run_rogue(task_id)
    assert ti.state == state, ti.error
    assert isinstance(pid, int)
    await trio.to_thread.run_sync(wait_for_exit, pid)


DAG_FILE = """
import os

from stateward import Dag
import helper_{tag}

dag = Dag("edited", default_args={{"isolation": "process"}})


@dag.task
def version() -> list[object]:
    return [{version!r}, helper_{tag}.VERSION, os.getppid()]
"""


async def test_a_dag_file_edited_between_runs_is_seen(tmp_path: Path) -> None:
    """Editing the Dag file, or a module it imports, reaches the next attempt; the old
    template goes away."""
    dag_file = tmp_path / "edited.py"
    helper = tmp_path / "helper_e.py"
    dag_file.write_text(DAG_FILE.format(tag="e", version="one"))
    helper.write_text("VERSION = 'h1'\n")
    templates: list[int] = []
    async with open_runtime(store=MemoryStore()) as rt:

        async def run(run_id: str) -> Any:
            dag = load_dags(dag_file)["edited"]
            ti = await rt.run_task(dag.get_task("version"), run_id=run_id)
            assert ti.state == "success", ti.error
            *seen, template = ti.result
            templates.append(template)
            return seen

        assert await run("r1") == ["one", "h1"]
        assert await run("r2") == ["one", "h1"]
        dag_file.write_text(DAG_FILE.format(tag="e", version="second"))
        assert await run("r3") == ["second", "h1"]
        helper.write_text("VERSION = 'h22'\n")
        assert await run("r4") == ["second", "h22"]
    assert templates[0] == templates[1] != templates[2] != templates[3]
    for pid in templates:
        await trio.to_thread.run_sync(wait_for_exit, pid)


async def test_templates_beyond_the_limit_are_retired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime keeps at most MAX_TEMPLATES templates: the least recently used goes."""
    monkeypatch.setattr(forkserver, "MAX_TEMPLATES", 1)
    tasks = []
    for tag in ("a", "b"):
        (tmp_path / f"helper_{tag}.py").write_text("VERSION = 'h'\n")
        (tmp_path / f"dag_{tag}.py").write_text(DAG_FILE.format(tag=tag, version=tag))
        tasks.append(load_dags(tmp_path / f"dag_{tag}.py")["edited"].get_task("version"))
    async with open_runtime(store=MemoryStore()) as rt:
        first = await rt.run_task(tasks[0], run_id="r")
        await rt.run_task(tasks[1], run_id="r")
        await trio.to_thread.run_sync(wait_for_exit, first.result[-1])
        again = await rt.run_task(tasks[0], run_id="r2")
    assert again.result[:2] == ["a", "h"]
    assert again.result[-1] != first.result[-1]


async def test_a_dag_file_that_starts_threads_runs_in_fresh_interpreters() -> None:
    """Forking a process whose threads are gone is unsafe: such a file is not forked from."""
    task = load_dags(FIXTURES / "threaded.py")["threaded"].get_task("where_am_i")
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r")
    assert ti.state == "success", ti.error
    assert ti.result[1] == os.getpid()


async def test_a_dead_template_is_replaced() -> None:
    """A template killed between attempts is started again for the next one."""
    task = load_dags(ROGUES)["rogues"].get_task("where_am_i")
    async with open_runtime(store=MemoryStore()) as rt:
        first = await rt.run_task(task, run_id="r1")
        os.kill(first.result[1], signal.SIGKILL)
        await trio.to_thread.run_sync(wait_for_exit, first.result[1])
        second = await rt.run_task(task, run_id="r2")
    assert second.state == "success", second.error
    assert second.result[1] != first.result[1]


async def test_without_the_fork_server_each_attempt_starts_an_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the fork server is off (or unsupported), the task process is the runtime's child."""
    monkeypatch.setattr(forkserver, "ENABLED", False)
    ti, _ = await run_rogue("where_am_i")
    assert ti.state == "success", ti.error
    assert ti.result[1] == os.getpid()


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    """Every test leaves no process behind (templates and task processes are reaped)."""
    yield
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            assert pid == 0, f"an unreaped child process {pid} was left behind"
    except ChildProcessError:
        pass


async def test_a_daemon_thread_that_exits_the_process_fails_the_try() -> None:
    """os._exit from a thread the task started, before it reported: a failed try, with
    the exit code named."""
    ti, _ = await run_rogue("exits_from_a_daemon_thread")
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert str(ti.error) == (
        "the task process for rogues.exits_from_a_daemon_thread try 1 exited with code 4 "
        "before reporting a result"
    )


async def test_an_attempt_ends_when_its_process_exits_even_if_its_template_is_stopped() -> None:
    """The runtime sees a forked task process exit by itself (a pidfd): an attempt that
    reported ends without waiting for its template to reap it."""
    task = load_dags(ROGUES)["rogues"].get_task("stops_its_template")
    continued: list[int] = []

    async def continue_templates_after_a_deadline() -> None:
        await trio.sleep(30)
        continued.extend(children_of_self())
        for pid in continued:
            os.kill(pid, signal.SIGCONT)

    async with open_runtime(store=MemoryStore()) as rt, trio.open_nursery() as nursery:
        nursery.start_soon(continue_templates_after_a_deadline)
        ti = await rt.run_task(task, run_id="r")
        assert not continued, "the attempt ended only once its template was continued"
        for pid in children_of_self():
            os.kill(pid, signal.SIGCONT)
        nursery.cancel_scope.cancel()
    assert ti.state == "success", ti.error
    pid, template = ti.result
    await trio.to_thread.run_sync(wait_for_exit, pid)
    await trio.to_thread.run_sync(wait_for_exit, template)


def test_the_template_rehearses_an_attempt_without_leaving_a_thread() -> None:
    """The warm-up a template runs before it forks succeeds and starts no thread."""
    before = threading.active_count()
    assert rehearse() is True
    assert threading.active_count() == before


SPARE_DAG_FILE = """
import os
import time
from pathlib import Path

from stateward import Dag

dag = Dag("spare", default_args={{"isolation": "process"}})


@dag.task
def who() -> list[object]:
    return [{version!r}, os.getpid(), os.getppid()]


@dag.task
def waits(params) -> str:
    folder = Path(params["folder"])
    (folder / "started").write_text(f"{{os.getpid()}} {{os.getppid()}}")
    deadline = time.monotonic() + 30
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {version!r}
"""


def spare_of(template: int, ran: set[int]) -> int:
    """The pid of the spare task process ``template`` has forked ahead: a child that ran
    none of ``ran`` (the spare is forked once the previous attempt has its process, so
    poll for it, with a deadline)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = [pid for pid in children_of(template) if pid not in ran]
        if waiting:
            assert len(waiting) == 1, f"more than one spare: {waiting}"
            return waiting[0]
        time.sleep(0.01)
    raise AssertionError(f"template {template} forked no spare")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
    return found


async def test_each_attempt_runs_in_the_spare_forked_ahead_and_only_one(tmp_path: Path) -> None:
    """The template forks the next attempt's process ahead; an attempt runs in it, and
    each attempt gets a process of its own."""
    dag_file = tmp_path / "spare.py"
    dag_file.write_text(SPARE_DAG_FILE.format(version="one"))
    task = load_dags(dag_file)["spare"].get_task("who")
    ran: set[int] = set()
    async with open_runtime(store=MemoryStore()) as rt:
        first = await rt.run_task(task, run_id="r0")
        _, pid, template = first.result
        ran.add(pid)
        for run in range(1, 4):
            spare = await trio.to_thread.run_sync(spare_of, template, ran)
            ti = await rt.run_task(task, run_id=f"r{run}")
            assert ti.state == "success", ti.error
            _, pid, parent = ti.result
            assert (pid, parent) == (spare, template)
            ran.add(pid)
    assert len(ran) == 4


async def test_a_retired_template_kills_its_spare_and_an_edit_is_seen(tmp_path: Path) -> None:
    """A spare runs what its template loaded: when the Dag file changes the template is
    retired, its spare killed, and the next attempt runs the file as it is."""
    dag_file = tmp_path / "spare.py"
    dag_file.write_text(SPARE_DAG_FILE.format(version="one"))
    async with open_runtime(store=MemoryStore()) as rt:
        task = load_dags(dag_file)["spare"].get_task("who")
        first = await rt.run_task(task, run_id="r1")
        version, pid, template = first.result
        assert version == "one"
        spare = await trio.to_thread.run_sync(spare_of, template, {pid})
        dag_file.write_text(SPARE_DAG_FILE.format(version="second"))
        task = load_dags(dag_file)["spare"].get_task("who")
        second = await rt.run_task(task, run_id="r2")
        assert second.state == "success", second.error
        version, pid, new_template = second.result
        assert version == "second"
        assert new_template != template
        assert pid != spare
        await trio.to_thread.run_sync(wait_for_exit, spare)
        await trio.to_thread.run_sync(wait_for_exit, template)


async def test_closing_the_runtime_ends_the_spare(tmp_path: Path) -> None:
    """An idle template's spare goes with the template when the runtime closes."""
    dag_file = tmp_path / "spare.py"
    dag_file.write_text(SPARE_DAG_FILE.format(version="one"))
    task = load_dags(dag_file)["spare"].get_task("who")
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r1")
        _, pid, template = ti.result
        spare = await trio.to_thread.run_sync(spare_of, template, {pid})
    await trio.to_thread.run_sync(wait_for_exit, spare)
    await trio.to_thread.run_sync(wait_for_exit, template)


async def test_a_busy_template_retired_kills_its_spare_at_once(tmp_path: Path) -> None:
    """A template retired while an attempt still runs keeps serving that attempt, but its
    spare (which would run the old file) is killed at once."""
    dag_file = tmp_path / "spare.py"
    dag_file.write_text(SPARE_DAG_FILE.format(version="one"))
    waits = load_dags(dag_file)["spare"].get_task("waits")
    outcome: list[Any] = []
    async with open_runtime(store=MemoryStore()) as rt, trio.open_nursery() as nursery:

        async def run_waits() -> None:
            outcome.append(await rt.run_task(waits, run_id="r1", params={"folder": str(tmp_path)}))

        nursery.start_soon(run_waits)
        started = await trio.to_thread.run_sync(read_when_written, tmp_path / "started")
        pid, template = map(int, started.split())
        spare = await trio.to_thread.run_sync(spare_of, template, {pid})
        dag_file.write_text(SPARE_DAG_FILE.format(version="second"))
        who = load_dags(dag_file)["spare"].get_task("who")
        second = await rt.run_task(who, run_id="r2")
        assert second.state == "success", second.error
        assert second.result[0] == "second"
        assert second.result[2] != template
        await trio.to_thread.run_sync(wait_for_exit, spare)
        assert not outcome, "the attempt still runs"
        (tmp_path / "go").write_text("")
    assert outcome[0].state == "success", outcome[0].error
    assert outcome[0].result == "one"
    await trio.to_thread.run_sync(wait_for_exit, template)


def read_when_written(path: Path) -> str:
    """The text of ``path`` once it has some (polled, with a deadline)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if text := path.read_text():
                return text
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written")
