"""Each attempt's log: what its task printed and logged, never another attempt's."""

from __future__ import annotations

import logging
import sys
import textwrap
import time
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


# -- ShellOperator ------------------------------------------------------------------------------


async def test_a_commands_output_is_kept() -> None:
    """A command's stdout and stderr are in its attempt's log, a failing one's too."""
    dag = Dag("shell")
    ShellOperator(task_id="ok", dag=dag, command="echo out; echo err >&2")
    ShellOperator(task_id="bad", dag=dag, command="echo partial; echo broken >&2; exit 3")
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    assert result.ti("ok").log == "out\nerr\n"
    assert result.ti("bad").state == "failed"
    assert result.ti("bad").log == "partial\nbroken\n"


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
