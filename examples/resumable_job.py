"""The canonical use of task state: a retry reattaches to the job its first try submitted.

The task submits a long job to an external service, stores the job id in task state,
and then its worker "crashes". The retry finds the job id in task state and waits for
that job instead of submitting a duplicate. Task state belongs to the run id, so
running the same run id again (after an interrupted run, say) finds the job id too:
its first try reattaches and submits nothing. Run it::

    python examples/resumable_job.py --db stateward.db
    stateward run examples/resumable_job.py --run-id nightly
    stateward run examples/resumable_job.py --run-id nightly   # reattaches at try 1

(``stateward.ResumableJobOperator`` packages this pattern: see external_job.py.)
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from stateward import Dag, TaskInstanceInfo, run_dag


class BatchService:
    """A stand-in for an external batch service (EMR, Databricks, a warehouse)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1001)
        self.submissions: list[str] = []

    def submit(self, name: str) -> str:
        job_id = f"{name}-{next(self._ids)}"
        self.submissions.append(job_id)
        return job_id

    def wait(self, job_id: str) -> dict[str, Any]:
        return {"job_id": job_id, "status": "succeeded", "rows": 4200}


SERVICE = BatchService()

dag = Dag(
    "resumable_job",
    default_args={"retries": 2, "retry_delay": 0.05},
    description="Submit an external job once; retries reattach to it.",
)


@dag.task
def run_report(task_state: Any, ti: TaskInstanceInfo) -> dict[str, Any]:
    """Submit the nightly report job once, whatever happens to this worker."""
    job_id = task_state.get("job_id")
    if job_id is None:
        job_id = SERVICE.submit("nightly-report")
        task_state.set("job_id", job_id)
        print(f"[try {ti.try_number}] submitted {job_id}; job id saved in task state")
        # The crash this example is about: the job runs on, its id is in task state.
        print(f"[try {ti.try_number}] worker lost while polling {job_id} (simulated crash)")
        raise ConnectionError(f"lost the connection while polling {job_id}")
    print(f"[try {ti.try_number}] found {job_id} in task state: reattaching, not resubmitting")
    result = SERVICE.wait(job_id)
    print(
        f"[try {ti.try_number}] {job_id} {result['status']}; "
        f"jobs submitted in this run: {len(SERVICE.submissions)}"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="stateward.db", help="SQLite file for state")
    args = parser.parse_args()
    outcome = run_dag(dag, db=args.db)
    ti = outcome.ti("run_report")
    tries = "1 try" if ti.try_number == 1 else f"{ti.try_number} tries"
    print(f"run {outcome.run_id}: {outcome.state} after {tries}")
    raise SystemExit(0 if outcome.state == "success" else 1)
