"""``stateward runs clear``, ``stateward logs``, ``run --task``, the resume hint after a
failure and the retention of run records by ``stateward cleanup`` (as subprocesses)."""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import textwrap
import threading
import time
from pathlib import Path

from stateward._loader import load_dags
from stateward._runtime.runtime import Runtime
from tests.test_cli import COMMAND, FIXTURES, assert_user_error, stateward, with_rt

DEADLINE = 60.0


def test_a_failed_run_prints_the_command_that_resumes_it(tmp_path: Path):
    """After a failure the CLI prints the run id and the exact command that resumes it;
    that command resumes the run (tries continue)."""
    db = tmp_path / "s.db"
    first = stateward("run", FIXTURES / "failing.py", "--run-id", "r7", "--db", db)
    assert first.returncode == 1
    note = first.stderr.splitlines()[-1]
    assert note.startswith("note: run 'r7' failed;")
    command = note.split("(what succeeded is not run again): ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["stateward", "run"]
    assert argv[-4:] == ["--run-id", "r7", "--db", str(db)]
    again = stateward(*argv[1:], "--json")
    submit, _ = json.loads(again.stdout)["task_instances"]
    assert submit["try_number"] == 4


def test_runs_clear_marks_instances_to_run_again(tmp_path: Path):
    """`runs clear` clears the chosen instances (task state discarded unless
    --keep-task-state); the next run of the run id runs them; an unknown run is a user
    error (exit 1)."""
    db = tmp_path / "s.db"
    assert stateward("run", FIXTURES / "etl.py", "--run-id", "r1", db=db).returncode == 0
    cleared = stateward("runs", "clear", "etl", "r1", "--task", "extract", db=db)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.splitlines()[0] == (
        "cleared 2 task instances of Dag 'etl' run 'r1': extract[0], extract[1]"
    )
    shown = json.loads(stateward("runs", "show", "etl", "r1", "--json", db=db).stdout)
    assert shown["state"] == "queued"
    assert [ti["state"] for ti in shown["instances"]] == ["cleared", "cleared", "success"]

    async def job_id(rt: Runtime) -> object:
        return await rt.state.task("etl", "r1", "extract", 0).aget("job_id")

    assert with_rt(db, job_id) is None
    again = stateward("run", FIXTURES / "etl.py", "--run-id", "r1", "--json", db=db)
    tries = [ti["try_number"] for ti in json.loads(again.stdout)["task_instances"]]
    assert tries == [2, 2, 1]  # extract ran again; load was reported from its record
    assert with_rt(db, job_id) == "job-a"
    kept = stateward("runs", "clear", "etl", "r1", "--failed-only", "--keep-task-state", db=db)
    assert kept.stdout == "cleared 0 task instances of Dag 'etl' run 'r1'\n"
    missing = stateward("runs", "clear", "etl", "nope", db=db)
    assert_user_error(missing, 1, "no run 'nope' of Dag 'etl' is recorded")


def test_run_task_runs_and_records_one_instance(tmp_path: Path):
    """`run FILE --task ID [--map-index N]` runs that instance alone and records it; a
    later full run of the run id runs the others; bad choices are usage errors."""
    db = tmp_path / "s.db"
    one = stateward("run", FIXTURES / "etl.py", "--task", "extract", "--map-index", "1",
                    "--run-id", "x", db=db)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[2].split()[:4] == ["extract", "1", "success", "1"]
    assert (
        one.stdout.splitlines()[-1] == "task 'extract' of Dag 'etl' run 'x' succeeded (1 success)"
    )
    shown = json.loads(stateward("runs", "show", "etl", "x", "--json", db=db).stdout)
    assert (shown["state"], len(shown["instances"])) == ("queued", 1)
    full = stateward("run", FIXTURES / "etl.py", "--run-id", "x", "--json", db=db)
    tries = [
        (ti["map_index"], ti["try_number"]) for ti in json.loads(full.stdout)["task_instances"]
    ]
    assert tries == [(0, 1), (1, 1), (-1, 1)]
    for args, part in (
        (["--map-index", "0"], "--map-index needs --task"),
        (["--task", "nope"], "has no task 'nope'; its tasks: extract, load"),
        (["--task", "extract", "--map-index", "5"], "has no map_index 5"),
    ):
        assert_user_error(stateward("run", FIXTURES / "etl.py", *args, db=db), 2, part)


def test_cleanup_removes_records_of_old_runs(tmp_path: Path):
    """cleanup also deletes the records of runs that ended more than --runs-older-than
    ago (30 days by default; `never` keeps them); --dry-run counts them."""
    db = tmp_path / "s.db"
    (dag,) = load_dags(FIXTURES / "etl.py").values()
    long_ago = time.time() - 40 * 86400

    async def old_run(rt: Runtime) -> None:
        await rt.run_dag(dag, run_id="old")

    with_rt(db, old_run, wall_clock=lambda: long_ago)
    assert stateward("run", FIXTURES / "etl.py", "--run-id", "new", db=db).returncode == 0
    dry = stateward("cleanup", "--dry-run", db=db)
    assert dry.stdout.splitlines()[1] == (
        "1 run record that ended over 30d ago would be deleted (dry run)"
    )
    never = stateward("cleanup", "--runs-older-than", "never", db=db)
    assert len(never.stdout.splitlines()) == 1
    done = stateward("cleanup", "--runs-older-than", "720h", db=db)
    assert done.stdout.splitlines()[1] == "deleted 1 run record that ended over 30d ago"
    listed = json.loads(stateward("runs", "list", "--json", db=db).stdout)
    assert [r["run_id"] for r in listed] == ["new"]
    bad = stateward("cleanup", "--runs-older-than", "soon", db=db)
    assert_user_error(bad, 2, "expected seconds (e.g. 3600, 90m, 12h, 30d) or 'never'")


def test_logs_prints_an_attempts_output(tmp_path: Path):
    """`logs` prints the latest try's output, `--try N` another's; an instance or try
    with no record is a user error."""
    db = tmp_path / "s.db"
    dag_file = tmp_path / "talk.py"
    dag_file.write_text(
        textwrap.dedent("""
        from stateward import Dag
        dag = Dag("talk", default_args={"retries": 1, "retry_delay": 0})

        @dag.task
        def speak(i, ti):
            print(f"shard {i} try {ti.try_number}")
            if ti.try_number == 1:
                raise RuntimeError("again")

        speak.expand(i=[0, 1])
    """)
    )
    assert stateward("run", dag_file, "--run-id", "r", db=db).returncode == 0
    latest = stateward("logs", "talk", "r", "speak", "--map-index", "1", db=db)
    assert (latest.returncode, latest.stdout) == (0, "shard 1 try 2\n")
    first = stateward("logs", "talk", "r", "speak", "--map-index", "0", "--try", "1", db=db)
    assert first.stdout == "shard 0 try 1\n"
    no_try = stateward("logs", "talk", "r", "speak", "--map-index", "0", "--try", "3", db=db)
    assert_user_error(no_try, 1, "speak[0] has no try 3; its tries: 1, 2")
    nothing = stateward("logs", "talk", "r", "speak", db=db)
    assert_user_error(nothing, 1, "no task instance talk/r/speak is recorded", "runs show talk r")


STEPPER = """
import os, time
from stateward import Dag
dag = Dag("steps")

def wait_for(name):
    while not os.path.exists(os.path.join({folder!r}, name)):
        time.sleep(0.02)

@dag.task
def step():
    print("step 1", flush=True)
    wait_for("go1")
    print("step 2", flush=True)
    wait_for("go2")
    print("done", flush=True)
"""


def _lines(stream: object) -> queue.Queue[str]:
    """The lines of a pipe, read by a thread, so a test can wait for one with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_logs_follow_prints_output_as_the_attempt_writes_it(tmp_path: Path):
    """`logs --follow` prints what a running attempt (in another process) writes as it
    comes, and exits once the attempt ended."""
    db = tmp_path / "s.db"
    dag_file = tmp_path / "steps.py"
    dag_file.write_text(STEPPER.format(folder=str(tmp_path)))
    env = {"STATEWARD_DB": str(db), "PATH": "/usr/bin:/bin"}
    runner = subprocess.Popen(
        [*COMMAND, "run", str(dag_file), "--run-id", "f"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while stateward("logs", "steps", "f", "step", db=db).stdout != "step 1\n":
            assert time.monotonic() < deadline, "the attempt's first output was never recorded"
            time.sleep(0.1)
        follower = subprocess.Popen(
            [*COMMAND, "logs", "steps", "f", "step", "--follow"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = _lines(follower.stdout)
        assert lines.get(timeout=DEADLINE) == "step 1\n"
        assert follower.poll() is None  # still following
        (tmp_path / "go1").touch()
        assert lines.get(timeout=DEADLINE) == "step 2\n"
        (tmp_path / "go2").touch()
        assert lines.get(timeout=DEADLINE) == "done\n"
        assert follower.wait(timeout=DEADLINE) == 0, follower.stderr.read()  # type: ignore[union-attr]
        assert runner.wait(timeout=DEADLINE) == 0
    finally:
        for proc in (runner,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
