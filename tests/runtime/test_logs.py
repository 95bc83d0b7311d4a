"""Each attempt's log: what its task printed and logged, never another attempt's."""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from stateward import Dag, MemoryStore, ShellOperator, open_runtime
from stateward._loader import load_dags
from stateward._runtime import forkserver
from stateward._runtime.capture import DEFAULT_HEAD_BYTES, DEFAULT_TAIL_BYTES, AttemptLog
from stateward._runtime.recording import Recorder

LINES = 20
INSTANCES = 25  # of each kind: 50 in all


def interleaving_dag(instances: int = INSTANCES, lines: int = LINES) -> Dag:
    """Plain-function and async instances (25 of each), all running at once, each
    printing its own index between state calls (thread switches) or checkpoints."""
    dag = Dag("interleave", max_active_tasks=2 * instances)

    @dag.task
    def sync_task(index: int, task_state: Any) -> None:
        for n in range(lines):
            print(f"sync {index} line {n}")
            task_state.set("n", n)  # a round trip to trio's thread
            time.sleep(0)

    @dag.task
    async def async_task(index: int, task_state: Any) -> None:
        for n in range(lines):
            print(f"async {index} line", n)  # two writes: its own line still
            await task_state.aset("n", n)
            await trio.lowlevel.checkpoint()

    sync_task.expand(index=list(range(instances)))
    async_task.expand(index=list(range(instances)))
    return dag


async def check_interleaved(instances: int, lines: int) -> None:
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(interleaving_dag(instances, lines), run_id="r")
    assert result.state == "success"
    for kind in ("sync", "async"):
        for index in range(instances):
            ti = result.ti(f"{kind}_task", index)
            assert ti.log.splitlines() == [f"{kind} {index} line {n}" for n in range(lines)]
            assert ti.attempts[0].log == ti.log


async def test_concurrent_attempts_keep_only_their_own_output() -> None:
    """50 concurrent instances, sync and async, each log exactly their own lines."""
    await check_interleaved(INSTANCES, LINES)


@pytest.mark.long
async def test_many_concurrent_attempts_keep_only_their_own_output() -> None:
    """The same with 200 instances (40 worker threads busy) printing 200 lines each."""
    await check_interleaved(100, 200)


async def test_output_is_still_echoed_live(capsys: pytest.CaptureFixture[str]) -> None:
    """What a task prints still reaches the process's stdout and stderr."""
    dag = Dag("echo")

    @dag.task
    def speak() -> None:
        print("to stdout")
        print("to stderr", file=sys.stderr)

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(speak, run_id="r")
    assert ti.log == "to stdout\nto stderr\n"
    out, err = capsys.readouterr()
    assert "to stdout\n" in out
    assert "to stderr\n" in err


async def test_the_streams_are_restored_when_the_last_runtime_closes() -> None:
    """The proxy stands in for sys.stdout only while a runtime is open (nested: the outer)."""
    before = sys.stdout, sys.stderr
    async with open_runtime(store=MemoryStore()):
        proxied = sys.stdout
        assert proxied is not before[0]
        async with open_runtime(store=MemoryStore()):
            assert sys.stdout is proxied
        assert sys.stdout is proxied
    assert (sys.stdout, sys.stderr) == before


async def test_without_a_stdout_output_is_still_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where sys.stdout is None (pythonw), a task's prints are kept, and None restored."""
    monkeypatch.setattr(sys, "stdout", None)
    dag = Dag("no_stdout")

    @dag.task
    def speak() -> None:
        print("kept anyway")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(speak, run_id="r")
    assert ti.log == "kept anyway\n"
    assert sys.stdout is None


async def test_each_try_has_its_own_log() -> None:
    """A retried instance keeps each try's output; ti.log is the last try's."""
    dag = Dag("retried", default_args={"retries": 1, "retry_delay": 0})

    @dag.task
    def flaky(ti: Any) -> None:
        print(f"try {ti.try_number}")
        if ti.try_number == 1:
            raise RuntimeError("first try fails")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(flaky, run_id="r")
    assert [a.log for a in ti.attempts] == ["try 1\n", "try 2\n"]
    assert ti.log == "try 2\n"


async def test_a_failed_attempt_keeps_what_it_printed() -> None:
    """Output before an exception is in the failed attempt's log."""
    dag = Dag("fails")

    @dag.task
    async def fails() -> None:
        print("about to fail")
        raise ValueError("boom")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(fails, run_id="r")
    assert ti.state == "failed"
    assert ti.log == "about to fail\n"


# -- logging ----------------------------------------------------------------------------------


@pytest.fixture
def task_logger() -> Iterator[logging.Logger]:
    """A task's logger that lets INFO through; left as it was after the test."""
    logger = logging.getLogger("tests.task")
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(logging.NOTSET)
    logger.handlers.clear()
    logger.propagate = True


async def test_logging_records_are_kept_per_attempt(task_logger: logging.Logger) -> None:
    """Records a task logs (sync or async, concurrently) are in its own attempt's log."""
    dag = Dag("logs", max_active_tasks=20)

    @dag.task
    def sync_logs(index: int) -> None:
        for n in range(5):
            task_logger.info("sync %d record %d", index, n)
            time.sleep(0)

    @dag.task
    async def async_logs(index: int) -> None:
        for n in range(5):
            task_logger.warning("async %d record %d", index, n)
            await trio.lowlevel.checkpoint()

    sync_logs.expand(index=list(range(10)))
    async_logs.expand(index=list(range(10)))
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    for index in range(10):
        lines = result.ti("sync_logs", index).log.splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == [
            f"INFO tests.task: sync {index} record {n}" for n in range(5)
        ]
        lines = result.ti("async_logs", index).log.splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == [
            f"WARNING tests.task: async {index} record {n}" for n in range(5)
        ]


async def test_a_record_a_handler_prints_is_kept_once(task_logger: logging.Logger) -> None:
    """A stream handler writing to sys.stderr (the proxy) does not capture a record again."""
    async with open_runtime(store=MemoryStore()) as rt:
        task_logger.addHandler(logging.StreamHandler())  # made now: writes to the proxy
        dag = Dag("handled")

        @dag.task
        def logs() -> None:
            task_logger.warning("only once")

        ti = await rt.run_task(logs, run_id="r")
    assert ti.log.count("only once") == 1
    assert ti.log.endswith("WARNING tests.task: only once\n")


async def test_a_record_that_cannot_be_formatted_does_not_fail_the_task(
    task_logger: logging.Logger,
) -> None:
    """A record whose arguments do not fit its format is kept as it was given."""
    task_logger.propagate = False  # pytest's own handler raises on such a record
    dag = Dag("bad_record")

    @dag.task
    def logs() -> str:
        task_logger.info("%d rows", "many")
        return "went on"

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(logs, run_id="r")
    assert ti.result == "went on"
    assert ti.log == (
        "INFO tests.task: '%d rows' % ('many',) could not be formatted "
        "(TypeError: %d format: a real number is required, not str)\n"
    )


async def test_records_outside_attempts_are_not_kept(task_logger: logging.Logger) -> None:
    """The runtime's own records (a retry's warning) are in no attempt's log."""
    dag = Dag("retry_logged", default_args={"retries": 1, "retry_delay": 0})

    @dag.task
    def flaky(ti: Any) -> None:
        if ti.try_number == 1:
            raise RuntimeError("first try fails")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(flaky, run_id="r")
    assert [a.log for a in ti.attempts] == ["", ""]


async def test_a_record_after_a_partial_line_starts_a_line_of_its_own(
    task_logger: logging.Logger,
) -> None:
    """A print without a newline, then a logging record: two lines, not one."""
    dag = Dag("partial")

    @dag.task
    def halfway() -> None:
        print("progress: 50%", end="")
        task_logger.warning("halfway")
        print("done")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(halfway, run_id="r")
    lines = ti.log.splitlines()
    assert lines[0] == "progress: 50%"
    assert lines[1].endswith("WARNING tests.task: halfway")
    assert lines[2:] == ["done"]


def test_write_line_after_a_newline_adds_none() -> None:
    """A line written after whole lines (or first) gets no extra newline."""
    log = AttemptLog()
    log.write_line("first")
    log.write("whole\n")
    log.write_line("second")
    log.write("part")
    log.write_line("third")
    assert log.text() == "first\nwhole\nsecond\npart\nthird\n"


EXECUTOR_DAG = textwrap.dedent(
    """
    import asyncio
    import logging

    from airflow.sdk import DAG, task


    def blocking():
        print("printed in the executor")
        logging.getLogger("tests.task").warning("logged in the executor")


    with DAG(dag_id="executor"):

        @task
        async def offloads():
            await asyncio.get_running_loop().run_in_executor(None, blocking)

        offloads()
    """
)


async def test_an_asyncio_tasks_run_in_executor_output_is_kept(tmp_path: Path) -> None:
    """An Airflow-style async task's run_in_executor(None, f) runs f in the attempt's
    context: what f prints and logs is in the attempt's log."""
    path = tmp_path / "executor.py"
    path.write_text(EXECUTOR_DAG)
    dag = load_dags(path)["executor"]
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    log = result.ti("offloads").log
    assert "printed in the executor\n" in log
    assert "WARNING tests.task: logged in the executor" in log


# -- ShellOperator ------------------------------------------------------------------------------


async def test_a_commands_output_is_kept() -> None:
    """A command's stdout and stderr are in its attempt's log, a failing one's too."""
    dag = Dag("shell")
    ShellOperator(task_id="ok", dag=dag, command="echo out; echo err >&2")
    ShellOperator(task_id="bad", dag=dag, command="echo partial; echo broken >&2; exit 3")
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    # Two pipes: lines written at one instant may be read in either order.
    assert sorted(result.ti("ok").log.splitlines()) == ["err", "out"]
    assert result.ti("bad").state == "failed"
    assert sorted(result.ti("bad").log.splitlines()) == ["broken", "partial"]


async def test_a_commands_lines_are_logged_in_the_order_they_come() -> None:
    """stdout and stderr lines interleave in the log as the command writes them."""
    dag = Dag("shell_order")
    command = "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three"
    task = ShellOperator(task_id="sh", dag=dag, command=command)
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r")
    assert ti.log == "one\ntwo\nthree\n"


async def test_a_commands_output_is_in_the_live_log_while_it_runs(tmp_path: Path) -> None:
    """What a command wrote is recorded while it still runs (``logs --follow``)."""
    flag = tmp_path / "go-on"
    dag = Dag("shell_live")
    command = f"echo started; while [ ! -e {flag} ]; do sleep 0.05; done; echo done"
    task = ShellOperator(task_id="sh", dag=dag, command=command)
    async with open_runtime(store=MemoryStore()) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(rt.run_task, task, run_id="r"))
            with trio.fail_after(30):  # a generous bound, not a timing check
                while True:
                    record = await rt.runs.get_instance("shell_live", "r", "sh")
                    if record is not None and record.attempts[-1].log == "started\n":
                        break
                    await trio.sleep(0.1)
            assert record.attempts[-1].state == "running"
            flag.touch()
        record = await rt.runs.get_instance("shell_live", "r", "sh")
    assert record is not None
    assert (record.state, record.attempts[-1].log) == ("success", "started\ndone\n")


async def test_a_command_printing_a_lot_keeps_memory_bounded() -> None:
    """A command writing 20 MB is read as it comes: memory stays bounded, the log keeps
    1 MiB and the result its last 64 KiB."""
    dag = Dag("shell_loud")
    command = "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo last"
    task = ShellOperator(task_id="sh", dag=dag, command=command)
    tracemalloc.start()
    try:
        async with open_runtime(store=MemoryStore()) as rt:
            ti = await rt.run_task(task, run_id="r")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ti.state == "success"
    assert len(ti.log.encode()) < 1024 * 1024 + 200
    assert ti.log.endswith("x\nlast\n")
    assert ti.result == "last"  # the end of stdout, from a line's start
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


async def test_a_commands_undecodable_output_is_kept_replaced() -> None:
    """Bytes that are not UTF-8 are kept as U+FFFD; a last line without newline too."""
    dag = Dag("shell_bytes")
    command = "printf 'a\\377\\376b\\n'; printf 'no newline'"
    task = ShellOperator(task_id="sh", dag=dag, command=command)
    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(task, run_id="r")
    assert (ti.state, ti.log) == ("success", "a\ufffd\ufffdb\nno newline")


async def test_a_commands_stderr_logged_at_info_is_kept_once() -> None:
    """With INFO on, the stderr lines logged for the terminal are not kept twice."""
    logger = logging.getLogger("stateward.operators")
    logger.setLevel(logging.INFO)
    try:
        dag = Dag("shell_info")
        task = ShellOperator(task_id="sh", dag=dag, command="echo err >&2")
        async with open_runtime(store=MemoryStore()) as rt:
            ti = await rt.run_task(task, run_id="r")
    finally:
        logger.setLevel(logging.NOTSET)
    assert ti.log == "err\n"


# -- bounds -----------------------------------------------------------------------------------


def test_a_log_keeps_its_head_and_tail_and_says_what_it_dropped() -> None:
    """Past head + tail bytes, the middle is dropped and a marker line counts it."""
    log = AttemptLog(head_bytes=10, tail_bytes=10)
    for n in range(100):
        log.write(f"{n:03}\n")  # 4 bytes each, 400 in all
    assert log.dropped == 380
    assert log.text() == (
        "000\n001\n00\n"
        "[stateward: 380 bytes of output dropped here; an attempt's log keeps its first "
        "10 and last 10 bytes]\n"
        "7\n098\n099\n"
    )


def test_a_log_under_its_bounds_is_kept_whole() -> None:
    """Up to head + tail bytes nothing is dropped and no marker is added."""
    log = AttemptLog(head_bytes=4, tail_bytes=4)
    log.write("abcdefgh")
    assert (log.text(), log.dropped) == ("abcdefgh", 0)


def test_negative_bounds_are_refused() -> None:
    """A negative head or tail is a ValueError naming both."""
    with pytest.raises(ValueError, match=r"head_bytes=-1 and tail_bytes=4"):
        AttemptLog(head_bytes=-1, tail_bytes=4)


async def test_a_task_printing_megabytes_keeps_1_mib() -> None:
    """By default an attempt keeps its first and last 512 KiB of output."""
    dag = Dag("loud")
    line = "x" * 99 + "\n"

    @dag.task
    def loud() -> None:
        print("first line")
        for _ in range(30_000):  # ~3 MB
            sys.stdout.write(line)
        print("last line")

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(loud, run_id="r")
    assert DEFAULT_HEAD_BYTES + DEFAULT_TAIL_BYTES == 1024 * 1024
    assert ti.log.startswith("first line\n")
    assert ti.log.endswith(line + "last line\n")
    assert "bytes of output dropped here" in ti.log
    assert len(ti.log.encode()) < 1024 * 1024 + 200


async def test_a_large_running_log_is_recorded_less_often(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each progress record carries the log so far: once it holds 1 MiB, a line a
    second is recorded every 4 s (256 KiB a second at most), not every second."""
    sent: list[tuple[float, int]] = []
    record = Recorder.attempt_output

    async def spy(self: Recorder, *args: Any) -> None:
        sent.append((trio.current_time(), len(args[4])))
        await record(self, *args)

    monkeypatch.setattr(Recorder, "attempt_output", spy)
    dag = Dag("ticking")

    @dag.task
    async def ticks() -> None:
        for _ in range(1024):
            print("x" * 1023)
        for n in range(12):
            await trio.sleep(1)
            print("tick", n)

    async with open_runtime(store=MemoryStore()) as rt:
        ti = await rt.run_task(ticks, run_id="r")
    assert ti.state == "success"
    sizes = [size for _, size in sent]
    assert 2 <= len(sizes) <= 4, sent  # every 4 s of the ~12 s run, not every second
    # The first record may come before or after "tick 0" is printed (both wake at 1 s).
    assert all(size >= 1024 * 1024 for size in sizes), sent
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(sent)]
    assert all(gap >= 4 for gap in gaps), sent


# -- isolated attempts ----------------------------------------------------------------------------

ISOLATED = textwrap.dedent(
    """
    import logging
    import os
    import sys

    from stateward import Dag

    dag = Dag("isolated_logs", default_args={"isolation": "process"})


    @dag.task
    def speaks() -> None:
        print("printed in the child")
        print("to stderr in the child", file=sys.stderr, flush=True)
        logging.getLogger("child").warning("a record in the child")
        os.write(1, b"written to fd 1\\n")
        os.write(1, b"half ")  # a line in two writes, the other pipe's between them
        os.write(2, b"between\\n")
        os.write(1, b"a line\\n")


    @dag.task
    def dies() -> None:
        print("last words", flush=True)
        os._exit(3)
    """
)


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "fresh_interpreter"])
async def test_an_isolated_attempts_output_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    """A task process's stdout and stderr, fd-level writes too, are the attempt's log,
    also when it dies; forked from a template or started fresh."""
    monkeypatch.setattr(forkserver, "ENABLED", forked)
    path = tmp_path / "isolated_logs.py"
    path.write_text(ISOLATED)
    dag = load_dags(path)["isolated_logs"]
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    log = result.ti("speaks").log
    lines = log.splitlines()
    for text in ("printed in the child", "to stderr in the child", "written to fd 1"):
        assert lines.count(text) == 1
    assert "a record in the child" in lines
    assert "half a line" in lines  # whole lines: the other pipe never splits one
    dies = result.ti("dies")
    assert dies.state == "failed"
    assert dies.log == "last words\n"


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "fresh_interpreter"])
async def test_an_isolated_commands_output_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    """A ShellOperator in a task process: its command's stdout and stderr lines are the
    attempt's log, as in process, and its stdout is still the result."""
    monkeypatch.setattr(forkserver, "ENABLED", forked)
    path = tmp_path / "isolated_shell.py"
    path.write_text(
        "from stateward import Dag, ShellOperator\n"
        "dag = Dag('isolated_shell')\n"
        "ShellOperator(task_id='sh', dag=dag, isolation='process',\n"
        "              command='echo out-line; echo err-line >&2')\n"
    )
    dag = load_dags(path)["isolated_shell"]
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    ti = result.ti("sh")
    assert (ti.state, ti.result) == ("success", "out-line")
    assert sorted(ti.log.splitlines()) == ["err-line", "out-line"]
