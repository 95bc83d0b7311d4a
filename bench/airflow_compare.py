"""One Airflow 3.3 Dag file: ``airflow dags test`` against stateward; prints one JSON line.

The file is written for Airflow (``from airflow.sdk import DAG, task``): one task that
reads and writes ``task_state_store``. The same file is run, unmodified,

- by ``airflow dags test one_task`` in the Airflow virtualenv given (``--airflow-venv``
  or ``$STATEWARD_BENCH_AIRFLOW_VENV``; a throwaway ``pip install apache-airflow==3.3.2``,
  never a dependency of stateward), with its metadata database migrated beforehand
  (not timed);
- by ``stateward run FILE`` in a subprocess (a fresh SQLite file each time);
- by a test of the kind docs/airflow.md shows, in this process: open a harness on a
  fresh in-memory runtime (``SyncHarness``), load the file (``load_dag``), run its Dag,
  close (``harness_test_ms``, the median); of that, loading and running
  (``harness_load_and_run_ms``) and running alone (``harness_run_ms``).

Whole-process figures are the minimum of ``--repetitions`` runs (Airflow's: of 2). The
ratios are taken against Airflow's figure measured in the same run, so they hold
better than the absolute times on a loaded machine.

Run: ``.venv/bin/python bench/airflow_compare.py --airflow-venv /tmp/afvenv``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine
from stateward.testing import SyncHarness

DAG_FILE = """\
from datetime import datetime

from airflow.sdk import DAG, task

with DAG(dag_id="one_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def count(task_state_store=None):
        seen = task_state_store.get("seen", default=0) + 1
        task_state_store.set("seen", seen)
        return seen

    count()
"""


def timed(command: list[str], env: dict[str, str], repetitions: int) -> float:
    """The fastest of ``repetitions`` runs of ``command``, in seconds."""
    best = float("inf")
    for _ in range(repetitions):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--airflow-venv", default=os.environ.get("STATEWARD_BENCH_AIRFLOW_VENV"))
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    if not args.airflow_venv:
        sys.exit("give --airflow-venv (a virtualenv with apache-airflow==3.3.2 installed)")
    folder = Path(tempfile.mkdtemp(prefix="stateward-airflow-bench-"))
    dags = folder / "dags"
    dags.mkdir()
    dag_file = dags / "one_task.py"
    dag_file.write_text(DAG_FILE)

    airflow = str(Path(args.airflow_venv) / "bin" / "airflow")
    airflow_env = {
        **os.environ,
        "AIRFLOW_HOME": str(folder / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    subprocess.run([airflow, "db", "migrate"], env=airflow_env, check=True, capture_output=True)
    airflow_s = timed([airflow, "dags", "test", "one_task"], airflow_env, 2)

    script = Path(sys.executable).with_name("stateward")
    stateward_s = min(
        timed(
            [str(script), "run", str(dag_file), "--db", str(folder / f"s{i}.db")],
            dict(os.environ),
            1,
        )
        for i in range(args.repetitions)
    )

    tests, loads, runs = [], [], []
    for i in range(max(args.repetitions, 5) * 4):
        start = time.perf_counter()
        with SyncHarness(run_id=f"r{i}") as sw:
            opened = time.perf_counter()
            dag = sw.load_dag(dag_file)
            loaded = time.perf_counter()
            result = sw.run_dag(dag)
            ran = time.perf_counter()
        ended = time.perf_counter()
        assert result.state == "success", result
        tests.append((ended - start) * 1000)
        loads.append((ran - opened) * 1000)
        runs.append((ran - loaded) * 1000)
    test_ms = statistics.median(tests)
    emit(
        "airflow_compare",
        airflow_dags_test_s=round(airflow_s, 2),
        stateward_run_s=round(stateward_s, 3),
        harness_test_ms=round(test_ms, 2),
        harness_load_and_run_ms=round(statistics.median(loads), 2),
        harness_run_ms=round(statistics.median(runs), 2),
        ratio_airflow_vs_stateward_run=round(airflow_s / stateward_s, 1),
        ratio_airflow_vs_harness_test=round(airflow_s * 1000 / test_ms),
        airflow="3.3.2",
        **machine(),
    )


if __name__ == "__main__":
    main()
