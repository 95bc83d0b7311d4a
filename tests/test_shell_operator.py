"""ShellOperator: a templated command, stdout as the result, failures that say why."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from stateward import (
    Asset,
    Dag,
    DagDefinitionError,
    Runtime,
    StatewardError,
    TaskTimeoutError,
    TemplateKeyError,
)
from stateward._loader import load_dags
from stateward._operators import RESULT_BYTES, ShellCommandError, ShellOperator

DAG_ID = "etl"
RUN_ID = "run-1"
ORDERS = Asset("orders")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "templated.py"


def shell(command: Any, *, dag: Dag | None = None, **options: Any) -> ShellOperator:
    return ShellOperator(task_id="sh", dag=dag or Dag(DAG_ID), command=command, **options)


async def run(rt: Runtime, task: ShellOperator) -> Any:
    return await rt.run_task(task, run_id=RUN_ID)


# -- success ------------------------------------------------------------------------------


async def test_stdout_is_the_result(sw_runtime):
    """The command's stdout, less one final newline, is the task's result."""
    ti = await run(sw_runtime, shell("printf 'a b\\n\\n'; echo ignored >&2"))
    assert (ti.state, ti.result) == ("success", "a b\n")


async def test_a_long_stdout_gives_its_last_64_kib_from_a_line_start(sw_runtime):
    """Past 64 KiB (what a record keeps), the result is the end of stdout, whole lines."""
    ti = await run(sw_runtime, shell("for i in $(seq 1 20000); do echo line$i; done"))
    lines = ti.result.split("\n")
    assert lines[-1] == "line20000"
    assert len(ti.result.encode()) <= RESULT_BYTES
    assert len(ti.result.encode()) > RESULT_BYTES - 20
    first = int(lines[0].removeprefix("line"))
    assert lines == [f"line{i}" for i in range(first, 20001)]


async def test_stderr_lines_are_logged_as_they_come(sw_runtime, caplog):
    """Each stderr line is an INFO record on stateward.operators, a failing command's
    too (its end is also in the error)."""
    caplog.set_level(logging.INFO, logger="stateward.operators")
    ti = await run(sw_runtime, shell("echo out; echo 'first' >&2; echo 'second' >&2; exit 1"))
    assert ti.state == "failed"
    shown = [r.getMessage() for r in caplog.records if r.name == "stateward.operators"]
    assert shown == ["etl.sh stderr: first", "etl.sh stderr: second"]
    assert ti.error.stderr_tail == "first\nsecond"


async def test_a_str_command_runs_in_the_shell(sw_runtime):
    """A str command gets shell syntax: pipes, variables, &&."""
    ti = await run(sw_runtime, shell("x=3; echo one two | wc -w && echo $((x * 2))"))
    assert ti.result.split() == ["2", "6"]


async def test_command_reads_task_and_asset_state(rt):
    """<< task_state.k >> and << asset_state.k >> render into the command."""
    await rt.state.task(DAG_ID, RUN_ID, "sh").aset("job_id", "J-42")
    await rt.state.asset(ORDERS).aset("watermark", 17)
    task = shell(
        "echo job=<< task_state.job_id >> since=<< asset_state.watermark >>", outlets=[ORDERS]
    )
    ti = await run(rt, task)
    assert ti.result == "job=J-42 since=17"
    assert ti.rendered == {"command": "echo job=J-42 since=17", "env": None}


async def test_curly_braces_reach_the_shell(sw_runtime):
    """Shell ${VAR} and awk { } are not template syntax."""
    ti = await run(sw_runtime, shell("V=ok; echo ${V} | awk '{ print $1 \"!\" }'"))
    assert ti.result == "ok!"


async def test_a_list_command_runs_without_a_shell(sw_runtime):
    """A list runs the program directly; items are templated and never split."""
    await sw_runtime.state.task(DAG_ID, RUN_ID, "sh").aset("job_id", "J 1; rm -rf /")
    task = shell(["printf", "[%s]", "<< task_state.job_id >>", "$HOME"])
    ti = await run(sw_runtime, task)
    assert ti.result == "[J 1; rm -rf /][$HOME]"
    assert ti.rendered["command"] == ["printf", "[%s]", "J 1; rm -rf /", "$HOME"]


async def test_native_rendering_may_put_numbers_in_a_list(sw_runtime):
    """With native rendering an int in a list command is passed as its text."""
    await sw_runtime.state.task(DAG_ID, RUN_ID, "sh").aset("count", 3)
    dag = Dag(DAG_ID, render_template_as_native_obj=True)
    ti = await run(sw_runtime, shell(["echo", "<< task_state.count + 1 >>"], dag=dag))
    assert ti.result == "4"
    assert ti.rendered["command"] == ["echo", 4]


# -- env and cwd --------------------------------------------------------------------------


async def test_env_is_templated_and_merged_over_the_environment(sw_runtime, monkeypatch):
    """env values render; the runtime's own variables stay visible by default."""
    monkeypatch.setenv("SW_INHERITED", "from-parent")
    await sw_runtime.state.asset(ORDERS).aset("watermark", "2024-05-01")
    task = shell(
        'echo "$SINCE $SW_INHERITED"',
        env={"SINCE": "<< asset_state.watermark >>"},
        inlets=[ORDERS],
    )
    ti = await run(sw_runtime, task)
    assert ti.result == "2024-05-01 from-parent"
    assert ti.rendered["env"] == {"SINCE": "2024-05-01"}


async def test_append_env_false_gives_only_env(sw_runtime, monkeypatch):
    """append_env=False hides the runtime's environment from the command."""
    monkeypatch.setenv("SW_INHERITED", "from-parent")
    task = shell('echo "${SW_INHERITED:-unset} $ONLY"', env={"ONLY": "this"}, append_env=False)
    ti = await run(sw_runtime, task)
    assert ti.result == "unset this"


async def test_the_command_knows_its_task_instance(sw_runtime):
    """STATEWARD_* variables name the dag, task, run, map index and try."""
    task = shell(
        'echo "$STATEWARD_DAG_ID $STATEWARD_TASK_ID $STATEWARD_RUN_ID '
        '$STATEWARD_MAP_INDEX $STATEWARD_TRY_NUMBER"'
    )
    ti = await run(sw_runtime, task)
    assert ti.result == "etl sh run-1 -1 1"


async def test_cwd_sets_the_working_folder(sw_runtime, tmp_path: Path):
    """The command runs in cwd."""
    ti = await run(sw_runtime, shell("pwd -P", cwd=tmp_path))
    assert ti.result == str(await trio.Path(tmp_path).resolve())


async def test_missing_cwd_fails_before_running(sw_runtime, tmp_path: Path):
    """A cwd that does not exist fails the task with a message naming it."""
    missing = tmp_path / "nope"
    ti = await run(sw_runtime, shell("true", cwd=missing))
    assert isinstance(ti.error, ShellCommandError)
    assert ti.error.returncode is None
    assert str(ti.error) == (
        f"task 'etl.sh': the command 'true' could not be started: its working folder "
        f"cwd={str(missing)!r} does not exist; create it or fix cwd"
    )


# -- failure ------------------------------------------------------------------------------


async def test_non_zero_exit_fails_with_code_and_stderr_tail(rt):
    """A non-zero exit fails the task; the error gives the exit code and stderr's end."""
    ti = await run(rt, shell("echo partial; echo 'warning: slow' >&2; echo 'boom' >&2; exit 3"))
    assert ti.state == "failed"
    error = ti.error
    assert isinstance(error, ShellCommandError)
    assert isinstance(error, StatewardError)
    assert (error.returncode, error.stderr_tail, error.task) == (3, "warning: slow\nboom", "etl.sh")
    assert str(error) == (
        "task 'etl.sh': the command \"echo partial; echo 'warning: slow' >&2; echo 'boom' "
        '>&2; exit 3" exited with code 3; the end of its stderr:\n  warning: slow\n  boom'
    )
    assert ti.result is None


async def test_failure_without_stderr_says_so(sw_runtime):
    """A command that fails silently is reported as writing nothing to stderr."""
    ti = await run(sw_runtime, shell(["false"]))
    assert str(ti.error) == (
        "task 'etl.sh': the command 'false' exited with code 1; it wrote nothing to stderr"
    )
    assert ti.error.stderr_tail == ""


async def test_stderr_tail_keeps_the_last_20_lines(sw_runtime):
    """Only the last 20 lines of stderr are kept."""
    ti = await run(sw_runtime, shell("for i in $(seq 1 50); do echo line$i >&2; done; exit 2"))
    lines = ti.error.stderr_tail.splitlines()
    assert lines == [f"line{i}" for i in range(31, 51)]
    assert str(ti.error).endswith("\n  line49\n  line50")


async def test_stderr_tail_keeps_at_most_2000_characters(sw_runtime):
    """A huge last line is cut from the front to 2000 characters."""
    ti = await run(sw_runtime, shell("printf 'x%.0s' $(seq 1 5000) >&2; printf END >&2; exit 1"))
    tail = ti.error.stderr_tail
    assert len(tail) == 2000
    assert tail.startswith("...x")
    assert tail.endswith("xEND")


async def test_stderr_tail_of_a_megabyte_of_stderr(sw_runtime):
    """The tail comes from the end of stderr however much the command wrote."""
    ti = await run(
        sw_runtime,
        shell("head -c 1000000 /dev/zero | tr '\\0' y >&2; echo >&2; echo END >&2; false"),
    )
    assert ti.error.stderr_tail.endswith("yyy\nEND")
    assert len(ti.error.stderr_tail) == 2000


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_signal_is_named(sw_runtime):
    """A command killed by a signal reports the signal's name and a negative code."""
    ti = await run(sw_runtime, shell(["sh", "-c", "kill -9 $$"]))
    assert ti.error.returncode == -9
    assert re.search(r"was killed by SIGKILL \(exit code -9\);", str(ti.error))


async def test_unknown_command_in_the_shell_exits_127(sw_runtime):
    """A str command naming no program fails with the shell's 127 and its complaint."""
    ti = await run(sw_runtime, shell("definitely-not-a-program-sw"))
    assert ti.error.returncode == 127
    assert "definitely-not-a-program-sw" in ti.error.stderr_tail
    assert "not found" in ti.error.stderr_tail


async def test_unknown_program_in_a_list_cannot_start(sw_runtime):
    """A list command naming no program fails before running, saying so."""
    ti = await run(sw_runtime, shell(["definitely-not-a-program-sw", "--flag"]))
    assert isinstance(ti.error, ShellCommandError)
    assert ti.error.returncode is None
    assert isinstance(ti.error.__cause__, FileNotFoundError)
    assert str(ti.error) == (
        "task 'etl.sh': the command 'definitely-not-a-program-sw --flag' could not be "
        "started: the program 'definitely-not-a-program-sw' was not found; give its full "
        "path or make sure it is on PATH"
    )


async def test_a_retry_runs_the_command_again(sw_runtime, tmp_path: Path):
    """A failed try is retried; each try's command is recorded."""
    marker = tmp_path / "tried"
    task = shell(
        f"test -e {marker} || {{ touch {marker}; echo flaky >&2; exit 1; }}; "
        "echo try $STATEWARD_TRY_NUMBER",
        retries=1,
    )
    ti = await run(sw_runtime, task)
    assert (ti.state, ti.try_number, ti.result) == ("success", 2, "try 2")
    assert isinstance(ti.attempts[0].error, ShellCommandError)
    assert ti.attempts[0].error.stderr_tail == "flaky"


async def test_mapped_commands_name_their_instance(sw_runtime):
    """expand(command=[...]) runs one command per instance; errors name the index."""
    dag = Dag(DAG_ID)
    shell("true", dag=dag).expand(command=["echo a", "exit 4"])
    run_result = await sw_runtime.run_dag(dag, run_id=RUN_ID)
    assert run_result.ti("sh", 0).result == "a"
    error = run_result.ti("sh", 1).error
    assert error.task == "etl.sh[1]"
    assert str(error).startswith("task 'etl.sh[1]': the command 'exit 4' exited with code 4")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_cancelling_the_task_kills_the_command_and_its_children(sw_runtime, tmp_path):
    """Cancellation terminates the command's whole process group."""

    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    async def wait_for(condition: Callable[[], bool]) -> None:
        for _ in range(2000):
            if condition():
                return
            await trio.sleep(0.01)
        pytest.fail("timed out")

    pidfile = tmp_path / "pid"
    task = shell(f"sleep 60 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, sw_runtime, task)
        await wait_for(pidfile.exists)
        nursery.cancel_scope.cancel()
    pid = int(pidfile.read_text())
    await wait_for(lambda: not alive(pid))


# -- templates ----------------------------------------------------------------------------


async def test_template_file_is_rendered_and_run(sw_runtime, tmp_path: Path):
    """A command ending in .sh is a file in template_searchpath, rendered then run."""
    (tmp_path / "report.sh").write_text(
        "#!/bin/bash\n<# rendered before it runs #>\nset -eu\necho since << asset_state.watermark >>\n"
    )
    await sw_runtime.state.asset(ORDERS).aset("watermark", 9)
    dag = Dag(DAG_ID, template_searchpath=str(tmp_path))
    ti = await run(sw_runtime, shell("report.sh", dag=dag, inlets=[ORDERS]))
    assert ti.result == "since 9"
    assert ti.rendered["command"] == "#!/bin/bash\n\nset -eu\necho since 9\n"


async def test_a_trailing_space_runs_a_script_path_as_is(sw_runtime, tmp_path: Path):
    """'path/run.sh ' (with a space) runs the script instead of loading it as a template."""
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho '<< not rendered >>'\n")
    script.chmod(0o755)
    ti = await run(sw_runtime, shell(f"{script} "))
    assert ti.result == "<< not rendered >>"


async def test_heredoc_markers_must_be_escaped(sw_runtime):
    """A literal << in a command is template syntax; << '<<' >> or raw blocks keep it."""
    ti = await run(sw_runtime, shell("cat << '<<' >>EOF\nhello\nEOF"))
    assert ti.result == "hello"
    ti = await run(sw_runtime, shell("<% raw %>cat <<EOF\nraw\nEOF<% endraw %>"))
    assert ti.result == "raw"
    ti = await run(sw_runtime, shell("echo $((1 << '<<' >> 4))"))
    assert ti.result == "16"


async def test_missing_state_key_fails_before_the_command_runs(sw_runtime, tmp_path: Path):
    """A missing key fails the render; the command never runs."""
    marker = tmp_path / "ran"
    ti = await run(sw_runtime, shell(f"touch {marker}; echo << task_state.job_id >>"))
    assert isinstance(ti.error, TemplateKeyError)
    assert str(ti.error) == (
        "template field 'command' of task 'etl.sh' reads task_state.job_id, which is not "
        "set; task_state has no keys; read it with task_state.get('job_id') if it may be "
        "absent"
    )
    assert not marker.exists()


async def test_command_rendering_to_nothing_fails(sw_runtime):
    """A command that renders to blank text fails instead of running an empty shell."""
    ti = await run(sw_runtime, shell("<< task_state.get('cmd', '') >>"))
    assert isinstance(ti.error, ShellCommandError)
    assert str(ti.error) == (
        "task 'etl.sh': the command rendered to an empty string, so there is nothing to "
        "run; check the template of the 'command' field"
    )


async def test_env_rendering_to_a_non_string_fails(sw_runtime):
    """With native rendering an env value must still become text."""
    await sw_runtime.state.task(DAG_ID, RUN_ID, "sh").aset("cfg", {"a": 1})
    dag = Dag(DAG_ID, render_template_as_native_obj=True)
    ti = await run(sw_runtime, shell("true", dag=dag, env={"CFG": "<< task_state.cfg >>"}))
    assert str(ti.error) == (
        "task 'etl.sh': env['CFG'] rendered to dict {'a': 1}, but environment variables "
        "are strings; make the template give a str"
    )


# -- definition errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"missing 1 required keyword-only argument: 'command'"),
        ({"command": ""}, r"^task 'sh': command is empty; give a shell command line"),
        ({"command": "  \n"}, r"^task 'sh': command is empty"),
        ({"command": []}, r"^task 'sh': command is an empty list; give a program"),
        ({"command": ["ls", 3]}, r"^task 'sh': every item of a command list must be a str"),
        ({"command": None}, r"^task 'sh': command must be a str \(run by the shell\) or a list"),
        ({"command": "ls", "env": ["A=1"]}, r"^task 'sh': env must be a mapping of str to str"),
        (
            {"command": "ls", "env": {"A": 1}},
            r"^task 'sh': env must map non-empty str names to str values, got \{'A': 1\}$",
        ),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_defined(kwargs, message):
    """A missing, empty or mistyped command or env is a definition error."""
    error = TypeError if not kwargs else DagDefinitionError
    with pytest.raises(error, match=message):
        ShellOperator(task_id="sh", dag=Dag(DAG_ID), **kwargs)


def test_template_fields_and_ext():
    """command and env are template fields; .sh and .bash name template files."""
    assert ShellOperator.template_fields == ("command", "env")
    assert ShellOperator.template_ext == (".sh", ".bash")


# -- the example Dag file -----------------------------------------------------------------


async def test_example_dag_runs_green_and_keeps_state(sw_sqlite_runtime):
    """examples/templated.py succeeds twice on one database, the watermark moving on."""
    dags = load_dags(EXAMPLE)
    assert list(dags) == ["templated_export"]
    dag = dags["templated_export"]
    invoices = sw_sqlite_runtime.state.asset(name="invoices")
    seen = []
    for _ in range(2):
        result = await sw_sqlite_runtime.run_dag(dag)
        assert result.state == "success", result.failed
        extract = result.ti("extract")
        assert extract.try_number == 2
        first, second = (a.rendered["command"] for a in extract.attempts)
        assert "reattaching" not in first
        assert f"reattaching to {extract.result}" in second
        seen.append(await invoices.aget("watermark"))
    assert seen == [100, 200]


def test_example_script_runs_twice_against_one_file(tmp_path: Path):
    """`python examples/templated.py --db PATH` exits 0 and prints what each try ran."""
    db = tmp_path / "state.db"
    env = {**os.environ, "STATEWARD_DB": str(tmp_path / "unused.db")}
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--db", str(db)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "watermark 0 -> 100" in outputs[0]
    assert "watermark 100 -> 200" in outputs[1]
    assert "rendered" in outputs[1]
    assert not (tmp_path / "unused.db").exists()


async def test_shell_operator_takes_every_task_option(sw_runtime) -> None:
    """ShellOperator passes Operator's options through, execution_timeout included."""
    from datetime import timedelta

    from stateward import Dag, TaskTimeoutError

    dag = Dag("shell_options")
    slow = ShellOperator(
        task_id="slow", dag=dag, command="sleep 5", execution_timeout=0.2, retries=1,
        retry_delay=timedelta(0),
    )  # fmt: skip
    assert (slow.retries, slow.execution_timeout) == (1, 0.2)
    result = await sw_runtime.run_task(slow, run_id="r")
    assert result.try_number == 2
    assert isinstance(result.error, TaskTimeoutError)


def test_a_sync_execute_over_the_async_one_is_refused_at_class_definition():
    """`def execute` calling super().execute() would get a coroutine: refused, showing the fix."""
    with pytest.raises(
        DagDefinitionError,
        match=r"^Logged\.execute is a plain def, but ShellOperator\.execute is async, so "
        r"super\(\)\.execute\(context\) would return a coroutine nobody awaits; define it as "
        r"'async def execute\(self, context\): \.\.\. return await super\(\)\.execute\(context\)'$",
    ):

        class Logged(ShellOperator):
            def execute(self, context: Any) -> Any:
                return super().execute(context)


async def test_an_async_execute_override_runs_the_command(sw_runtime):
    """The documented form: async def execute awaiting super().execute(context)."""

    class Shouted(ShellOperator):
        async def execute(self, context: Any) -> Any:
            return (await super().execute(context)).upper()

    task = Shouted(task_id="shout", command="echo hi", dag=Dag("d"))
    ti = await sw_runtime.run_task(task, run_id="r")
    assert (ti.state, ti.result) == ("success", "HI")


async def test_isolation_and_timeout_given_to_shell_operator_directly_take_effect(
    sw_runtime, tmp_path
) -> None:
    """ShellOperator(isolation="process", execution_timeout=...) runs in a task process, stopped at the limit."""
    dag_file = tmp_path / "isolated_shell.py"
    dag_file.write_text(
        "from stateward import Dag\n"
        "from stateward._operators import ShellOperator\n\n"
        "dag = Dag('isolated_shell')\n"
        "ShellOperator(task_id='here', dag=dag, command='echo $PPID')\n"
        "ShellOperator(task_id='there', dag=dag, command='echo $PPID', isolation='process')\n"
        "ShellOperator(\n"
        "    task_id='slow', dag=dag, command='sleep 30', isolation='process',\n"
        "    execution_timeout=0.5,\n"
        ")\n"
    )
    dag = load_dags(dag_file)["isolated_shell"]
    result = await sw_runtime.run_dag(dag, run_id=RUN_ID)
    here, there = result.ti("here"), result.ti("there")
    assert dag.tasks["there"].isolation == "process"
    assert (here.state, there.state) == ("success", "success"), there.error
    assert int(here.result) == os.getpid()
    assert int(there.result) != os.getpid()
    slow = result.ti("slow")
    assert isinstance(slow.error, TaskTimeoutError), slow.error
    assert "its task process was stopped with SIGTERM" in str(slow.error)
