"""The ``stateward`` console script, driven as a real subprocess.

State is seeded and checked in this process through the library (``open_runtime`` on
the same SQLite file); each CLI call is one subprocess, so the file keeps them few.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from stateward import open_runtime
from stateward._cli import JSON_FIELDS
from stateward._loader import load_dags
from stateward._runtime.runtime import Runtime

FIXTURES = Path(__file__).parent / "cli_fixtures"
_SCRIPT = Path(sys.executable).with_name("stateward")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stateward._cli"]
T = TypeVar("T")


def stateward(
    *args: str | Path, db: Path | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; ``db`` goes in $STATEWARD_DB, stdout is 80 columns."""
    env = {k: v for k, v in os.environ.items() if k != "STATEWARD_DB"}
    env["COLUMNS"] = "80"
    if db is not None:
        env["STATEWARD_DB"] = str(db)
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def with_rt(db: Path, work: Callable[[Runtime], Awaitable[T]], **options: Any) -> T:
    """Open a runtime on ``db`` in this process and run ``work`` with it."""

    async def go() -> T:
        async with open_runtime(db, **options) as rt:
            return await work(rt)

    return trio.run(go)


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    """One ``error:`` line on stderr naming ``parts``, no traceback, exit status ``code``."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for part in parts:
        assert part in lines[0]
    assert result.returncode == code, result.stderr


# -- run and dags -------------------------------------------------------------------------------


def test_run_success_prints_table_and_exits_0(tmp_path: Path):
    """A successful run exits 0 with a row per task instance; --param values are JSON or str."""
    db = tmp_path / "state.db"
    result = stateward(
        "run", FIXTURES / "etl.py", "--run-id", "r1", "--param", "limit=25",
        "--param", "label=nightly", db=db,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header == ["task", "map", "index", "state", "tries", "duration", "error"]
    rows = [line.split()[:4] for line in lines[2:5]]
    assert rows == [
        ["extract", "0", "success", "1"],
        ["extract", "1", "success", "1"],
        ["load", "-", "success", "1"],
    ]
    assert lines[-1] == "Dag 'etl' run 'r1' succeeded (3 success)"
    assert "load: success (try 1)" in result.stderr  # plain progress lines off a terminal

    async def read(rt: Runtime) -> tuple[Any, Any]:
        params = await rt.state.task("etl", "r1", "load").aget("params")
        return params, await rt.state.asset(name="orders").aget("watermark")

    assert with_rt(db, read) == ({"limit": 25, "label": "nightly"}, 25)


def test_run_failure_exits_1_with_the_error_in_the_table(tmp_path: Path):
    """A failed run exits 1; the table shows the error, the tries, and upstream_failed."""
    result = stateward("run", FIXTURES / "failing.py", "--db", tmp_path / "s.db")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "submit" in out
    assert "RuntimeError: the cluster is down" in " ".join(out.split())
    submit = next(line for line in out.splitlines() if line.startswith("submit"))
    assert submit.split()[1:4] == ["-", "failed", "2"]
    assert "upstream_failed" in next(line for line in out.splitlines() if line.startswith("report"))
    # Too long for one line at 80 columns: broken between its two phrases.
    which, outcome = out.splitlines()[-2:]
    assert which.startswith("Dag 'flaky' run 'manual__")
    assert which.endswith("'")
    assert outcome == "failed (1 failed, 1 upstream_failed)"
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "warning: flaky.submit (run 'manual__" in result.stderr
    assert "try 1 of 2 failed, retrying in 0s: RuntimeError: the cluster is down" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failure_after_one_try_says_try(tmp_path: Path):
    """A task without retries "failed after 1 try", not "1 tries"."""
    dag_file = tmp_path / "once.py"
    dag_file.write_text(
        "from stateward import Dag\n"
        "dag = Dag('once')\n"
        "@dag.task\n"
        "def boom():\n"
        "    raise ValueError('no')\n"
    )
    result = stateward("run", dag_file, "--db", tmp_path / "s.db")
    assert result.returncode == 1
    assert "once.boom (run 'manual__" in result.stderr
    assert "failed after 1 try\n" in result.stderr


def test_run_json_prints_the_result_as_one_object(tmp_path: Path):
    """--json: one object with each instance's state, tries, result (or repr) and error."""
    dag_file = tmp_path / "results.py"
    dag_file.write_text(
        "from stateward import Dag\n"
        "dag = Dag('results')\n"
        "@dag.task\n"
        "def numbers():\n"
        "    return {'rows': [1, 2]}\n"
        "@dag.task\n"
        "def odd():\n"
        "    return {3}\n"
    )
    result = stateward("run", dag_file, "--run-id", "r1", "--json", "--db", tmp_path / "s.db")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    for ti in document["task_instances"]:
        assert ti.pop("duration") >= 0
    assert document == {
        "dag_id": "results",
        "run_id": "r1",
        "state": "success",
        "task_instances": [
            {"task_id": "numbers", "map_index": -1, "state": "success", "try_number": 1,
             "result": {"rows": [1, 2]}, "error": None},
            {"task_id": "odd", "map_index": -1, "state": "success", "try_number": 1,
             "result": "{3}", "error": None},
        ],
    }  # fmt: skip
    failed = stateward("run", FIXTURES / "failing.py", "--json", "--db", tmp_path / "s.db")
    assert failed.returncode == 1
    submit, report = json.loads(failed.stdout)["task_instances"]
    assert (submit["state"], submit["try_number"]) == ("failed", 2)
    assert submit["error"] == "RuntimeError: the cluster is down"
    assert (report["state"], report["result"]) == ("upstream_failed", None)


def test_run_show_results_and_a_commands_stderr(tmp_path: Path):
    """--show-results prints rendered fields and return values; stderr lines are logged."""
    dag_file = tmp_path / "shell.py"
    dag_file.write_text(
        "from stateward import Dag\n"
        "from stateward._operators import ShellOperator\n"
        "dag = Dag('shell', params={'n': 5})\n"
        "ShellOperator(task_id='count', dag=dag,\n"
        "              command='echo counting to << params.n >> >&2; echo << params.n >>')\n"
    )
    result = stateward("run", dag_file, "--show-results", "--db", tmp_path / "s.db")
    assert result.returncode == 0, result.stderr
    assert "info: shell.count stderr: counting to 5\n" in result.stderr
    tail = result.stdout.split("succeeded (1 success)\n")[1]
    assert tail.splitlines() == [
        "",
        "count (try 1)",
        "  rendered command: echo counting to 5 >&2; echo 5",
        '  returned "5"',
    ]


def test_run_still_shows_what_tasks_print(tmp_path: Path):
    """Output kept in attempt logs is still echoed: in process, async, and isolated."""
    dag_file = tmp_path / "printing.py"
    dag_file.write_text(
        "import sys\n"
        "from stateward import Dag\n"
        "dag = Dag('printing')\n"
        "@dag.task\n"
        "def sync_task():\n"
        "    print('from a thread')\n"
        "@dag.task\n"
        "async def async_task():\n"
        "    print('from trio', file=sys.stderr)\n"
        "@dag.task(isolation='process')\n"
        "def isolated_task():\n"
        "    print('from a task process')\n"
    )
    result = stateward("run", dag_file, "--db", tmp_path / "s.db")
    assert result.returncode == 0, result.stderr
    assert "from a thread\n" in result.stdout
    assert "from a task process\n" in result.stdout
    assert "from trio\n" in result.stderr


def test_ctrl_c_prints_the_command_that_runs_it_again(tmp_path: Path):
    """SIGINT during a run: exit 130 with the run id and the command that runs it again."""
    dag_file = tmp_path / "slow.py"
    dag_file.write_text(
        "import sys\n"
        "import trio\n"
        "from stateward import Dag\n"
        "dag = Dag('slow')\n"
        "@dag.task\n"
        "async def wait(task_state):\n"
        "    if await task_state.aget('started'):\n"
        "        return 'resumed'\n"
        "    await task_state.aset('started', True)\n"
        "    print('started', file=sys.stderr, flush=True)\n"
        "    await trio.sleep(3600)\n"
    )
    db = tmp_path / "s.db"
    env = {k: v for k, v in os.environ.items() if k != "STATEWARD_DB"}
    argv = [*COMMAND, "run", str(dag_file), "--run-id", "r 9", "--param", "x=1", "--db", str(db)]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env) as process:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line == "started\n":  # the task kept 'started' in its task state
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(seen) + rest
    again = f"stateward run {dag_file} --run-id 'r 9' --db {db} --param x=1"
    assert rest.splitlines()[-1] == (
        f"error: interrupted run 'r 9'; its state is kept under that run id, and this runs "
        f"it again: {again}"
    )
    rerun = stateward(*shlex.split(again)[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert "Dag 'slow' run 'r 9' succeeded" in rerun.stdout


def test_live_progress_prints_logs_above_the_bar(tmp_path: Path):
    """On a terminal, a retry's warning starts a line of its own, never the bar's line."""
    pty = pytest.importorskip("pty")
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "STATEWARD_DB"}
    env.update(TERM="xterm", COLUMNS="80")
    argv = [*COMMAND, "run", str(FIXTURES / "failing.py"), "--db", str(tmp_path / "s.db")]
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL, env=env
    ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    os.close(controller)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    assert "warning: flaky.submit" in shown
    assert "━" in shown  # the bar was live
    for found in re.finditer("(warning|error): flaky", shown):
        assert found.start() == 0 or shown[found.start() - 1] in "\r\n", shown


def test_verbose_run_shows_the_tasks_traceback(tmp_path: Path):
    """stateward -v run shows the failing task's traceback in its log on stderr."""
    result = stateward("-v", "run", FIXTURES / "failing.py", "--db", tmp_path / "s.db")
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError("the cluster is down")' in result.stderr


def test_verbose_load_error_shows_the_traceback_from_the_dag_file(tmp_path: Path):
    """-v adds the load error's traceback, from the Dag file on: no loader or importlib."""
    (tmp_path / "cli_helper_zero.py").write_text("def f():\n    return 1 / 0\n\n\nY = f()\n")
    (tmp_path / "dagfile.py").write_text("from stateward import Dag\nimport cli_helper_zero\n")
    quiet = stateward("dags", "dagfile.py", cwd=tmp_path)
    assert_user_error(
        quiet, 1, "cannot load Dag file 'dagfile.py': ZeroDivisionError: division by zero, "
        "raised at 'cli_helper_zero.py', line 2 (imported at line 2 of the Dag file)"
    )  # fmt: skip
    verbose = stateward("-v", "dags", "dagfile.py", cwd=tmp_path)
    assert verbose.returncode == 1
    files = re.findall(r'File "([^"]+)", line (\d+)', verbose.stderr)
    assert [(Path(name).name, int(line)) for name, line in files] == [
        ("dagfile.py", 2), ("cli_helper_zero.py", 5), ("cli_helper_zero.py", 2),
    ]  # fmt: skip
    assert verbose.stderr.splitlines()[-1] == quiet.stderr.strip()


def test_shell_completion_completes_commands():
    """The documented completion hook answers: `stateward sta<TAB>` offers `state`."""
    env = {**os.environ, "_STATEWARD_COMPLETE": "bash_complete", "COMP_WORDS": "stateward sta",
           "COMP_CWORD": "1"}  # fmt: skip
    result = subprocess.run(
        COMMAND, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.stdout.splitlines() == ["plain,state"], result.stderr


def test_dags_lists_tasks():
    """`dags FILE` shows each task: mapped?, retries, inlets/outlets and upstream."""
    result = stateward("dags", FIXTURES / "etl.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Dag 'etl': 2 tasks")
    assert lines[1] == "Load orders."
    assert lines[2].split() == ["task", "mapped", "retries", "inlets", "outlets", "upstream"]
    assert lines[4].split() == ["extract", "yes", "(2)", "0"]
    assert lines[5].split() == ["load", "no", "0", "orders", "extract"]


# -- state list ---------------------------------------------------------------------------------


def seed_listing(db: Path) -> None:
    """Run the etl Dag as run r1 and add one out-of-band asset key."""
    dag = load_dags(FIXTURES / "etl.py")["etl"]

    async def work(rt: Runtime) -> None:
        await rt.run_dag(dag, run_id="r1")
        await rt.state.asset(name="orders").aset("note", "manual fix")

    with_rt(db, work)


def test_state_list_table_shows_provenance_in_80_columns(tmp_path: Path):
    """The table groups keys by owner and says who wrote each (try, task, out-of-band)."""
    db = tmp_path / "s.db"
    seed_listing(db)
    result = stateward("state", "list", "--db", db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert all(len(line) <= 80 for line in out.splitlines())
    for heading in (
        'task etl / r1 / extract[0] item "a"',
        "task etl / r1 / load",
        "asset orders (s3://lake/orders)",
    ):
        assert heading + "\n" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "try 1" in rows["job_id"]
    assert "in 29d" in rows["job_id"]
    assert "etl/r1/load" in rows["watermark"]  # "try 1" may wrap to the next line
    assert "never" in rows["watermark"]
    assert "out-of-band" in rows["note"]
    assert '"manual fix"' in rows["note"]


def test_state_list_shortens_long_run_ids_in_the_by_column(tmp_path: Path):
    """A writer's long run id shows as …, so the by column fits in a line or two."""
    db = tmp_path / "s.db"
    dag = load_dags(FIXTURES / "etl.py")["etl"]
    run_id = "manual__2026-11-29T04:52:17.588576+00:00"
    with_rt(db, lambda rt: rt.run_dag(dag, run_id=run_id))
    out = stateward("state", "list", "--asset", "orders", db=db).stdout
    assert all(len(line) <= 80 for line in out.splitlines())
    [row] = [line for line in out.splitlines() if line.startswith("  watermark")]
    assert "etl/…/load try 1" in row
    listed = json.loads(stateward("state", "list", "--json", "--asset", "orders", db=db).stdout)
    assert listed[0]["updated_by"] == f"etl/{run_id}/load try 1"


def test_state_list_json_has_exactly_the_documented_fields(tmp_path: Path):
    """--json prints one array of objects with the documented fields, times in ISO UTC."""
    db = tmp_path / "s.db"
    seed_listing(db)
    entries = json.loads(stateward("state", "list", "--json", db=db).stdout)
    assert all(list(entry) == list(JSON_FIELDS) for entry in entries)
    by_key = {(e["scope"], e["task_id"], e["map_index"], e["key"]): e for e in entries}
    job = by_key["task", "extract", 1, "job_id"]
    assert job["value"] == "job-b"
    assert job["dag_id"] == "etl"
    assert job["run_id"] == "r1"
    assert job["asset_name"] is None
    assert job["updated_by"] == "etl/r1/extract[1] try 1"
    assert job["updated_at"].endswith("+00:00")
    assert job["expires_at"] > job["updated_at"]
    note = by_key["asset", None, None, "note"]
    assert note["asset_name"] == "orders"
    assert note["asset_uri"] == "s3://lake/orders"
    assert note["dag_id"] is None
    assert note["expires_at"] is None
    assert note["updated_by"] is None
    assert len(entries) == 5


def test_a_value_that_cannot_be_read_fails_its_own_row_only(tmp_path: Path):
    """A stored int past 4,300 digits (written by another program): list and list --json
    show a marker in its row; get of that key is one error line naming it."""
    db = tmp_path / "s.db"
    where = ["--dag", "d", "--run-id", "r", "--task", "t"]
    for key in ("big", "ok"):
        assert stateward("state", "set", key, "1", *where, db=db).returncode == 0
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE task_state SET value = ? WHERE key = 'big'", ("1" * 4301,))
    marker = "<unreadable: Exceeds the limit (4300 digits) for integer string conversion>"
    entries = json.loads(stateward("state", "list", "--json", db=db).stdout)
    assert [(e["key"], e["value"]) for e in entries] == [("big", marker), ("ok", 1)]
    table = stateward("state", "list", db=db)
    assert table.returncode == 0, table.stderr
    assert "<unreadable: Exceeds" in table.stdout
    got = stateward("state", "get", "big", *where, db=db)
    assert_user_error(got, 1, "value stored under key 'big' cannot be read (Exceeds the limit")


def test_state_list_filters(tmp_path: Path):
    """Filters narrow the listing to one task instance, or to one asset."""
    db = tmp_path / "s.db"
    seed_listing(db)
    one = stateward("state", "list", "--json", "--task", "extract", "--map-index", "0", db=db)
    assert [(e["task_id"], e["map_index"], e["key"]) for e in json.loads(one.stdout)] == [
        ("extract", 0, "job_id")
    ]
    asset = stateward("state", "list", "--json", "--asset", "orders", db=db)
    assert [e["key"] for e in json.loads(asset.stdout)] == ["note", "watermark"]


# -- state get / set / delete / clear ------------------------------------------------------------


def test_task_state_round_trip_and_the_db_rule(tmp_path: Path):
    """set, get, delete, get for task state; ./stateward.db, then $STATEWARD_DB, then --db."""
    task = ["--dag", "etl", "--run-id", "r1", "--task", "extract", "--map-index", "1"]
    set_ = stateward("state", "set", "job_id", '"j-1"', *task, "--retention", "3600", cwd=tmp_path)
    assert set_.returncode == 0, set_.stderr
    db = tmp_path / "stateward.db"
    assert db.exists()
    got = stateward("state", "get", "job_id", *task, db=db)
    assert (got.returncode, got.stdout) == (0, '"j-1"\n')

    async def read(rt: Runtime) -> list[Any]:
        return await rt.state.list()

    [entry] = with_rt(db, read)
    assert entry.writer is None
    assert entry.expires_at is not None
    assert entry.expires_at - entry.updated_at == pytest.approx(3600, abs=5)
    deleted = stateward("state", "delete", "job_id", *task, "--db", db, db=tmp_path / "other.db")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 'job_id'" in deleted.stdout
    missing = stateward("state", "get", "job_id", *task, db=db)
    assert_user_error(missing, 1, "no key 'job_id'", "etl/r1/extract[1]")


def test_asset_state_round_trip_by_name_and_uri(tmp_path: Path):
    """set by --asset, get by --asset (not by --asset-uri: a name binds no URI), delete,
    then get says the key is absent; by --asset-uri alike."""
    db = tmp_path / "s.db"
    value = {"day": "2024-06-01", "rows": [1, 2]}
    set_ = stateward(
        "state", "set", "watermark", json.dumps(value), "--asset", "orders",
        "--retention", "never", db=db,
    )  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    got = stateward("state", "get", "watermark", "--asset", "orders", db=db)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == value
    unbound = stateward("state", "get", "watermark", "--asset-uri", "orders", db=db)
    assert_user_error(unbound, 1, "no key 'watermark'", "URI 'orders'")
    by_uri = stateward("state", "set", "w", "1", "--asset-uri", "s3://o", db=db)
    assert by_uri.returncode == 0, by_uri.stderr
    got = stateward("state", "get", "w", "--asset-uri", "s3://o", db=db)
    assert json.loads(got.stdout) == 1
    deleted = stateward("state", "delete", "watermark", "--asset", "orders", db=db)
    assert "deleted 'watermark' from the state of asset 'orders'" in deleted.stdout
    missing = stateward("state", "get", "watermark", "--asset", "orders", db=db)
    assert_user_error(missing, 1, "no key 'watermark'", "asset 'orders'")


def test_clear_one_instance_all_map_indices_and_an_asset(tmp_path: Path):
    """clear empties one map index; --all-map-indices the whole fleet; --asset an asset."""
    db = tmp_path / "s.db"

    async def seed(rt: Runtime) -> None:
        for index in (0, 1, 2):
            await rt.state.task("etl", "r1", "extract", index).aset("job_id", f"j{index}")
        await rt.state.task("etl", "r1", "load").aset("done", True)
        await rt.state.asset(name="orders").aset("watermark", 7)

    async def keys(rt: Runtime) -> list[tuple[str | None, int | None]]:
        return [(e.task_id or e.asset_name, e.map_index) for e in await rt.state.list()]

    with_rt(db, seed)
    task = ["--dag", "etl", "--run-id", "r1", "--task", "extract"]
    one = stateward("state", "clear", *task, "--map-index", "0", db=db)
    assert one.stdout == "cleared 1 key from the task state of etl/r1/extract[0]\n"
    assert with_rt(db, keys) == [("extract", 1), ("extract", 2), ("load", -1), ("orders", None)]
    fleet = stateward("state", "clear", *task, "--all-map-indices", db=db)
    assert "cleared 2 keys" in fleet.stdout
    assert "every map index" in fleet.stdout
    assert with_rt(db, keys) == [("load", -1), ("orders", None)]
    asset = stateward("state", "clear", "--asset", "orders", db=db)
    assert asset.stdout == "cleared 1 key from the state of asset 'orders'\n"
    assert with_rt(db, keys) == [("load", -1)]


def seed_fleet(db: Path, size: int) -> None:
    """Task state in ``size`` map indices of etl/r1/extract."""

    async def seed(rt: Runtime) -> None:
        for index in range(size):
            await rt.state.task("etl", "r1", "extract", index).aset("job_id", f"j{index}")

    with_rt(db, seed)


def count_keys(db: Path) -> int:
    async def count(rt: Runtime) -> int:
        return len(await rt.state.list())

    return with_rt(db, count)


def test_clearing_a_large_fleet_needs_yes_off_a_terminal(tmp_path: Path):
    """Above the threshold, --all-map-indices refuses without --yes when stdin is no tty."""
    db = tmp_path / "s.db"
    seed_fleet(db, 21)
    task = ["--dag", "etl", "--run-id", "r1", "--task", "extract", "--all-map-indices"]
    refused = stateward("state", "clear", *task, db=db)
    assert_user_error(refused, 2, "refusing to clear 21 keys", "pass --yes")
    assert count_keys(db) == 21
    done = stateward("state", "clear", *task, "--yes", db=db)
    assert done.returncode == 0, done.stderr
    assert "cleared 21 keys" in done.stdout
    assert count_keys(db) == 0


def test_clearing_a_large_fleet_asks_on_a_terminal(tmp_path: Path):
    """On a terminal the command asks; anything but yes clears nothing."""
    pty = pytest.importorskip("pty")
    db = tmp_path / "s.db"
    seed_fleet(db, 21)
    args = ["state", "clear", "--dag", "etl", "--run-id", "r1", "--task", "extract",
            "--all-map-indices", "--db", str(db)]  # fmt: skip
    for answer, left in ((b"n\n", 21), (b"y\n", 0)):
        controller, terminal = pty.openpty()
        with subprocess.Popen(
            [*COMMAND, *args], stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            os.close(terminal)
            os.write(controller, answer)
            out, _ = process.communicate(timeout=60)
        os.close(controller)
        assert b"clear 21 keys from the task state of etl/r1/extract, every map index?" in out
        assert count_keys(db) == left


def test_small_fleets_clear_without_asking(tmp_path: Path):
    """At most 20 keys, --all-map-indices clears at once, even off a terminal."""
    db = tmp_path / "s.db"
    seed_fleet(db, 20)
    task = ["--dag", "etl", "--run-id", "r1", "--task", "extract", "--all-map-indices"]
    done = stateward("state", "clear", *task, db=db)
    assert "cleared 20 keys" in done.stdout


def test_clear_notes_a_run_without_state(tmp_path: Path):
    """Clearing in a run that has no state says so: the run id is likely mistyped."""
    db = tmp_path / "s.db"
    seed_fleet(db, 1)
    nope = stateward(
        "state", "clear", "--dag", "etl", "--run-id", "nope", "--task", "extract", db=db
    )
    assert nope.returncode == 0, nope.stderr
    assert nope.stdout.splitlines() == [
        "cleared 0 keys from the task state of etl/nope/extract",
        "note: no task state is stored for run 'nope' of Dag 'etl'; check --dag and "
        "--run-id ('stateward state list --dag etl' shows its runs)",
    ]
    known = stateward("state", "clear", "--dag", "etl", "--run-id", "r1", "--task", "load", db=db)
    assert known.stdout == "cleared 0 keys from the task state of etl/r1/load\n"


def test_get_says_a_key_expired_and_when(tmp_path: Path):
    """An expired key reads as absent; get says it expired, and at what time."""
    db = tmp_path / "s.db"
    an_hour_ago = time.time() - 3600

    async def seed(rt: Runtime) -> None:
        await rt.state.asset(name="orders").aset("old", 2, retention=60)
        await rt.state.task("etl", "r1", "load").aset("old", 1, retention=60)

    with_rt(db, seed, wall_clock=lambda: an_hour_ago)
    asset = stateward("state", "get", "old", "--asset-uri", "orders", db=db)
    expired_at = datetime.fromtimestamp(an_hour_ago + 60, UTC).isoformat()[:16]
    assert_user_error(asset, 1, "key 'old' in the state of the asset with URI 'orders' expired at")
    assert expired_at in asset.stderr
    task = stateward(
        "state", "get", "old", "--dag", "etl", "--run-id", "r1", "--task", "load", db=db
    )
    assert_user_error(task, 1, "etl/r1/load expired at", "stateward cleanup")


def test_state_list_by_asset_uri(tmp_path: Path):
    """state list --asset-uri selects one asset by URI, as the other state commands do."""
    db = tmp_path / "s.db"
    seed_listing(db)
    listed = stateward("state", "list", "--json", "--asset-uri", "s3://lake/orders", db=db)
    assert listed.returncode == 0, listed.stderr
    assert [e["key"] for e in json.loads(listed.stdout)] == ["note", "watermark"]
    other = stateward("state", "list", "--json", "--asset-uri", "s3://lake/other", db=db)
    assert json.loads(other.stdout) == []
    both = stateward("state", "list", "--asset-uri", "x", "--task", "load", db=db)
    assert_user_error(both, 2, "--asset-uri lists asset state, which --task cannot match")


# -- cleanup --------------------------------------------------------------------------------------


def test_cleanup_counts_then_deletes_expired_rows(tmp_path: Path):
    """cleanup --dry-run counts expired rows; cleanup deletes them and says how many."""
    db = tmp_path / "s.db"

    async def seed(rt: Runtime) -> None:
        await rt.state.task("etl", "r1", "extract").aset("old", 1, retention=60)
        await rt.state.asset(name="orders").aset("old", 2, retention=60)
        await rt.state.asset(name="orders").aset("kept", 3)

    an_hour_ago = time.time() - 3600
    with_rt(db, seed, wall_clock=lambda: an_hour_ago)
    dry = stateward("cleanup", "--dry-run", db=db)
    assert dry.stdout.splitlines()[0] == "2 expired state rows would be deleted (dry run)"
    done = stateward("cleanup", db=db)
    assert done.stdout.splitlines()[0] == "deleted 2 expired state rows"

    async def remaining(rt: Runtime) -> list[str]:
        return [e.key for e in await rt.state.list(include_expired=True)]

    assert with_rt(db, remaining) == ["kept"]


# -- user errors ------------------------------------------------------------------------------------


def _syntax_error_file(tmp_path: Path) -> list[str | Path]:
    bad = tmp_path / "bad.py"
    bad.write_text("from stateward import Dag\ndag = Dag('x')\ndef broken(:\n")
    return ["run", bad]


def _other_sqlite(tmp_path: Path) -> list[str | Path]:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    return ["state", "list", "--db", path]


def _text_file(tmp_path: Path) -> list[str | Path]:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n" * 100)
    return ["state", "get", "k", "--asset", "a", "--db", path]


USER_ERRORS: list[tuple[str, Callable[[Path], list[str | Path]], int, tuple[str, ...]]] = [
    ("missing-file", lambda p: ["run", p / "nope.py"], 2, ("nope.py' does not exist",)),
    (
        "several-dags",
        lambda p: ["run", FIXTURES / "two_dags.py"],
        2,
        ("defines 2 Dags ('first', 'second')", "--dag"),
    ),
    (
        "unknown-dag",
        lambda p: ["run", FIXTURES / "two_dags.py", "--dag", "third"],
        2,
        ("no Dag 'third'", "it defines 'first', 'second'"),
    ),
    ("syntax-error", _syntax_error_file, 1, ("bad.py', line 3: SyntaxError: ",)),
    (
        "bare-word",
        lambda p: ["state", "set", "k", "hello", "--asset", "a"],
        2,
        ("'hello' is not JSON", "'\"hello\"'"),
    ),
    (
        "bad-json",
        lambda p: ["state", "set", "k", "{a: 1}", "--asset", "a"],
        2,
        ("'{a: 1}' is not valid JSON",),
    ),
    (
        "number-out-of-range",
        lambda p: ["state", "set", "note", "1e999", "--asset", "a"],
        2,
        ("'1e999': 1e999 is too large for a float",),
    ),
    (
        "db-is-a-folder",
        lambda p: ["state", "set", "k", "1", "--asset", "a", "--db", p],
        1,
        ("is a folder, not a file; give a database file's path", "stateward.db'"),
    ),
    ("state-command-at-top", lambda p: ["clear"], 2, ("did you mean 'stateward state clear'",)),
    ("other-sqlite", _other_sqlite, 1, ("SQLite database of another application", "invoices")),
    ("text-file", _text_file, 1, ("notes.txt' is not a stateward database",)),
    (
        "missing-db-list",
        lambda p: ["state", "list", "--db", p / "absent.db"],
        1,
        ("no database at", "absent.db"),
    ),
    (
        "missing-db-get",
        lambda p: ["state", "get", "k", "--asset", "a", "--db", p / "absent.db"],
        1,
        ("no database at",),
    ),
    (
        "missing-db-cleanup",
        lambda p: ["cleanup", "--dry-run", "--db", p / "absent.db"],
        1,
        ("no database at",),
    ),
]


@pytest.mark.parametrize(
    ("make_args", "code", "parts"),
    [pytest.param(make, code, parts, id=name) for name, make, code, parts in USER_ERRORS],
)
def test_user_errors_print_one_line(
    tmp_path: Path, make_args: Callable[[Path], list[str | Path]], code: int, parts: tuple[str, ...]
):
    """Each user error is one clear `error:` line, no traceback, exit 2 (usage) or 1."""
    result = stateward(*make_args(tmp_path), db=tmp_path / "default.db")
    assert_user_error(result, code, *parts)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("depth", [980, 5000])
def test_a_value_stored_deeper_than_the_limit_is_still_read(tmp_path: Path, depth: int):
    """A value an older release stored past the depth limit prints; listings keep going."""
    db = tmp_path / "s.db"

    async def seed(rt: Runtime) -> None:
        state = rt.state.task("etl", "r1", "t")
        await state.aset("deep", [0])
        await state.aset("shallow", 1)

    with_rt(db, seed)
    text = "[" * depth + "]" * depth
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE task_state SET value = ? WHERE key = 'deep'", (text,))
    got = stateward("state", "get", "deep", "--dag", "etl", "--run-id", "r1", "--task", "t", db=db)
    assert got.returncode == 0, got.stderr
    assert "".join(got.stdout.split()) == text
    listed = stateward("state", "list", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    assert '"key": "shallow"' in listed.stdout.replace('":"', '": "')
    assert text in "".join(listed.stdout.split())
    table = stateward("state", "list", db=db)
    assert table.returncode == 0, table.stderr
    assert "shallow" in table.stdout


# -- runs -----------------------------------------------------------------------------------


def test_run_resumes_and_runs_list_and_show_read_the_records(tmp_path: Path):
    """`run --run-id` of a recorded run resumes it (tries continue); `runs list` and
    `runs show` print the records, as tables and as JSON; an unknown run is a user error."""
    db = tmp_path / "s.db"
    first = stateward("run", FIXTURES / "failing.py", "--run-id", "r7", "--json", db=db)
    assert first.returncode == 1
    again = stateward("run", FIXTURES / "failing.py", "--run-id", "r7", "--json", db=db)
    submit, _ = json.loads(again.stdout)["task_instances"]
    assert (submit["state"], submit["try_number"]) == ("failed", 4)
    listed = stateward("runs", "list", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert (run["dag_id"], run["run_id"], run["state"]) == ("flaky", "r7", "failed")
    assert run["started_at"].endswith("+00:00")
    assert "instances" not in run
    shown = json.loads(stateward("runs", "show", "flaky", "r7", "--json", db=db).stdout)
    report_record, submit_record = shown["instances"]  # by task id
    assert [a["try_number"] for a in submit_record["attempts"]] == [1, 2, 3, 4]
    assert submit_record["attempts"][0]["error_type"] == "RuntimeError"
    assert (report_record["state"], report_record["attempts"]) == ("upstream_failed", [])
    table = stateward("runs", "show", "flaky", "r7", db=db)
    assert "RuntimeError: the" in table.stdout  # folded at 80 columns
    assert "Dag 'flaky' run 'r7': failed" in table.stdout
    assert "r7" in stateward("runs", "list", "--dag", "flaky", "--state", "failed", db=db).stdout
    assert "no runs match" in stateward("runs", "list", "--state", "success", db=db).stdout
    missing = stateward("runs", "show", "flaky", "nope", db=db)
    assert_user_error(missing, 1, "no run 'nope' of Dag 'flaky' is recorded", "runs list")


@pytest.mark.parametrize("tracebacks", [False, True])
def test_cli_log_format_leaves_the_record_to_other_handlers(tracebacks: bool) -> None:
    """The CLI's 'warning: ...' lines do not rename the level other handlers print."""
    from stateward._cli.app import _LogFormatter

    record = logging.LogRecord("stateward.runner", logging.WARNING, __file__, 1, "slow", None, None)
    assert _LogFormatter(tracebacks).format(record) == "warning: slow"
    assert logging.Formatter("%(levelname)s %(message)s").format(record) == "WARNING slow"
