"""Dag files written for Airflow 3.3 (``tests/airflow_dags/``) run unmodified.

Each file imports ``airflow.sdk`` (Airflow is not installed here) and is run as it
stands, by ``stateward run`` in a subprocess and through the pytest plugin's harness;
the state is checked after the retry each file stages and after a second run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from stateward import Dag, Runtime, load_dags, open_runtime
from stateward.testing import StateHarness

DAGS = Path(__file__).parent / "airflow_dags"
_SCRIPT = Path(sys.executable).with_name("stateward")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stateward._cli"]


@pytest.fixture
def demo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Where the Dag files' stand-in external systems write, for this test only."""
    env = {
        "DEMO_JOBS_DIR": str(tmp_path / "jobs"),
        "DEMO_FETCH_LOG": str(tmp_path / "fetched.log"),
        "DEMO_EXTRACT_LOG": str(tmp_path / "extract.log"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DEMO_FAIL_LOAD", raising=False)
    return env


def cli(
    *args: str | Path, env: dict[str, str], db: Path | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args), *(["--db", str(db)] if db else [])],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def run_cli(file: str, run_id: str, env: dict[str, str], db: Path, *more: str) -> dict[str, Any]:
    done = cli("run", DAGS / file, "--run-id", run_id, "--json", *more, env=env, db=db)
    assert done.returncode in (0, 1), done.stderr
    run: dict[str, Any] = json.loads(done.stdout)
    run["stderr"] = done.stderr
    return run


def state(env: dict[str, str], db: Path, *selector: str) -> dict[Any, Any]:
    done = cli("state", "list", "--json", *selector, env=env, db=db)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    return {
        (row["run_id"], row["task_id"], row["map_index"], row["key"]): row["value"] for row in rows
    }


def stored(db: Path, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """One instance's task state, read in this process (fewer subprocesses)."""

    async def read() -> dict[str, Any]:
        async with open_runtime(db=db) as rt:
            return dict(await rt.state.task(dag_id, run_id, task_id, map_index).aitems())

    return trio.run(read)


def count_jobs(env: dict[str, str]) -> int:
    return len(list(Path(env["DEMO_JOBS_DIR"]).iterdir()))


def lines(path: str | Path) -> list[str]:
    return Path(path).read_text().split()


def instances(run: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(ti["task_id"], ti["map_index"]): ti for ti in run["task_instances"]}


def test_no_airflow_is_installed_and_none_is_left_behind() -> None:
    """The files' imports are served while they load, then ``airflow`` is gone again."""
    with pytest.raises(ImportError):
        __import__("airflow")
    dags = load_dags(DAGS / "reattach_job.py")
    assert isinstance(dags["reattach_job"], Dag)
    assert not any(name == "airflow" or name.startswith("airflow.") for name in sys.modules)
    with pytest.raises(ImportError):
        __import__("airflow.sdk")


# -- by stateward run ---------------------------------------------------------------------


def test_cli_reattach_job(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """The retry reattaches to the job the first try submitted; a second run submits anew."""
    db = tmp_path / "s.db"
    run = run_cli("reattach_job.py", "r1", demo_env, db)
    ti = instances(run)[("export_orders", -1)]
    assert (run["state"], ti["try_number"], ti["result"]) == ("success", 2, 4200)
    assert "reattaching to export-" in run["stderr"]
    jobs = sorted(p.stem for p in (tmp_path / "jobs").iterdir())
    assert len(jobs) == 1
    first = stored(db, "reattach_job", "r1", "export_orders")
    assert first["job_id"] == jobs[0]
    assert first["status"] == "complete"
    second = run_cli("reattach_job.py", "r2", demo_env, db)
    assert instances(second)[("export_orders", -1)]["try_number"] == 2
    assert len(list((tmp_path / "jobs").iterdir())) == 2
    assert stored(db, "reattach_job", "r2", "export_orders")["job_id"] != jobs[0]


def test_cli_async_pages_resume_from_checkpoint(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """asyncio.gather/sleep work; the retry fetches only the pages not checkpointed."""
    db = tmp_path / "s.db"
    run = run_cli("async_pages.py", "r1", demo_env, db)
    ti = instances(run)[("ingest", -1)]
    assert (ti["try_number"], ti["result"]) == (2, {"pages": 10, "rows": 550})
    fetched = (tmp_path / "fetched.log").read_text().split()
    assert sorted(map(int, fetched)) == list(range(1, 11))  # none fetched twice
    assert "try 2 starts with 6 pages done" in run["stderr"]
    progress = stored(db, "async_pages", "r1", "ingest")["progress"]
    assert progress == {"done": list(range(1, 11)), "rows": 550}
    again = run_cli("async_pages.py", "r1", demo_env, db)  # the same run: nothing to do
    assert instances(again)[("ingest", -1)]["result"] == {"pages": 10, "rows": 550}
    assert len((tmp_path / "fetched.log").read_text().split()) == 10


def test_cli_mapped_tables(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """expand() over an upstream result maps at run time; each instance has its own state."""
    db = tmp_path / "s.db"
    run = run_cli("mapped_tables.py", "r1", demo_env, db)
    by = instances(run)
    assert [by[("copy_table", i)]["try_number"] for i in range(3)] == [1, 2, 1]
    assert by[("summarize", -1)]["result"] == ["raw_orders", "raw_customers", "raw_products"]
    rows = state(demo_env, db, "--task", "copy_table")
    assert [rows[("r1", "copy_table", i, "tries")] for i in range(3)] == [1, 2, 1]
    assert [rows[("r1", "copy_table", i, "table")] for i in range(3)] == [
        "orders", "customers", "products",
    ]  # fmt: skip
    again = run_cli("mapped_tables.py", "r1", demo_env, db)
    assert instances(again)[("summarize", -1)]["result"] == by[("summarize", -1)]["result"]
    assert state(demo_env, db, "--task", "copy_table") == rows  # nothing ran again


def test_cli_watermark_producer_and_consumer(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """Both Dags of the file are found; the watermark carries from run to run."""
    db = tmp_path / "s.db"
    listed = cli("dags", DAGS / "watermark_assets.py", env=demo_env, db=None)
    assert "orders_producer" in listed.stdout
    assert "orders_consumer" in listed.stdout
    for run_id in ("r1", "r2"):
        run = run_cli("watermark_assets.py", run_id, demo_env, db, "--dag", "orders_producer")
        assert instances(run)[("load_new_orders", -1)]["result"] == 5
    consumer = run_cli("watermark_assets.py", "c1", demo_env, db, "--dag", "orders_consumer")
    assert instances(consumer)[("report", -1)]["result"] == "2 loads, up to row 10"
    got = cli("state", "get", "--asset", "orders_daily", "watermark", env=demo_env, db=db)
    assert got.stdout.strip() == "10"


def test_cli_resumable_operator(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """ResumableJobMixin reattaches on retry; templates render in order with {{ }}."""
    db = tmp_path / "s.db"
    run = run_cli("resumable_operator.py", "nightly", demo_env, db)
    ti = instances(run)[("nightly_batch", -1)]
    jobs = [p.stem for p in (tmp_path / "jobs").iterdir()]
    assert ti["try_number"] == 2
    assert len(jobs) == 1
    assert ti["result"] == {
        "job": jobs[0], "report": "/reports/nightly-nightly.csv", "polls": [2],
    }  # fmt: skip
    assert stored(db, "resumable_batch", "nightly", "nightly_batch")["batch_job_id"] == jobs[0]
    assert "submitted batch-" in run["stderr"]  # self.log.info, shown by the CLI


def test_cli_taskflow_resume_passes_recorded_results(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    """A resumed run gives load the recorded results; extract does not run again."""
    db = tmp_path / "s.db"
    failed = run_cli("taskflow_etl.py", "r1", {**demo_env, "DEMO_FAIL_LOAD": "1"}, db)
    assert failed["state"] == "failed"
    assert instances(failed)[("load", -1)]["state"] == "failed"
    resumed = run_cli("taskflow_etl.py", "r1", demo_env, db)
    assert instances(resumed)[("load", -1)]["result"] == "r1: 3 orders, 50 in all"
    assert (tmp_path / "extract.log").read_text().split() == ["extract"]


# -- by the pytest plugin -----------------------------------------------------------------


async def test_plugin_reattach_job(
    sw: StateHarness, demo_env: dict[str, str], autojump_clock: trio.testing.MockClock
) -> None:
    """The harness loads the Airflow file and runs it; task state holds the one job."""
    dag = sw.load_dag(DAGS / "reattach_job.py")
    result = await sw.run_dag(dag)
    ti = result.ti("export_orders")
    assert (ti.state, ti.try_number, ti.result) == ("success", 2, 4200)
    saved = await sw.task_state(dag.get_task("export_orders"))
    assert count_jobs(demo_env) == 1
    assert saved["job_id"].startswith("export-")
    second = await sw.run_dag(dag, run_id="second")
    assert second.ti("export_orders").try_number == 2
    assert count_jobs(demo_env) == 2


async def test_plugin_async_pages(
    sw: StateHarness, demo_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An asyncio task runs under the plugin too, resuming from its checkpoint."""
    caplog.set_level(logging.INFO)  # the task logs at INFO, as Airflow code does
    dag = sw.load_dag(DAGS / "async_pages.py")
    result = await sw.run_dag(dag)
    assert result.ti("ingest").result == {"pages": 10, "rows": 550}
    assert result.ti("ingest").try_number == 2
    assert "try 2 starts with 6 pages done" in result.ti("ingest").log
    saved = await sw.task_state(dag.get_task("ingest"))
    assert saved["progress"]["rows"] == 550
    assert len(lines(demo_env["DEMO_FETCH_LOG"])) == 10


async def test_plugin_mapped_tables(sw: StateHarness, demo_env: dict[str, str]) -> None:
    """Mapped instances keep their own state; a second run starts them afresh."""
    dag = sw.load_dag(DAGS / "mapped_tables.py")
    result = await sw.run_dag(dag)
    assert result.ti("copy_table", 1).try_number == 2
    task = dag.get_task("copy_table")
    assert [(await sw.task_state(task, map_index=i))["tries"] for i in range(3)] == [1, 2, 1]
    second = await sw.run_dag(dag, run_id="second")
    assert second.ti("summarize").result == ["raw_orders", "raw_customers", "raw_products"]
    tries = [(await sw.task_state(task, map_index=i, run_id="second"))["tries"] for i in range(3)]
    assert tries == [1, 2, 1]


async def test_plugin_watermark(sw: StateHarness, demo_env: dict[str, str]) -> None:
    """Asset state carries the watermark across runs of the producer."""
    producer = sw.load_dag(DAGS / "watermark_assets.py", "orders_producer")
    await sw.run_dag(producer, run_id="r1")
    await sw.run_dag(producer, run_id="r2")
    assert await sw.asset_state("orders_daily") == {"watermark": 10, "runs": 2}
    consumer = sw.load_dag(DAGS / "watermark_assets.py", "orders_consumer")
    result = await sw.run_dag(consumer, run_id="c1")
    assert result.ti("report").result == "2 loads, up to row 10"


async def test_plugin_resumable_operator(sw: StateHarness, demo_env: dict[str, str]) -> None:
    """A retry reattaches; operator attributes do not carry from one try to the next."""
    dag = sw.load_dag(DAGS / "resumable_operator.py")
    ti = (await sw.run_dag(dag)).ti("nightly_batch")
    assert ti.try_number == 2
    assert ti.result["polls"] == [2]
    assert ti.rendered["report_path"] == "/reports/nightly-test_run.csv"
    second = (await sw.run_dag(dag, run_id="second")).ti("nightly_batch")
    assert second.result["polls"] == [2]
    assert count_jobs(demo_env) == 2


async def test_plugin_taskflow(sw_runtime: Runtime, demo_env: dict[str, str]) -> None:
    """TaskFlow arguments: load gets transform's selected results."""
    harness = StateHarness(sw_runtime, run_id="etl")
    result = await harness.run_dag(harness.load_dag(DAGS / "taskflow_etl.py"))
    assert result.ti("load").result == "etl: 3 orders, 50 in all"
    assert result.ti("transform").result == {"total": 50, "count": 3}
