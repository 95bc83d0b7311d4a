"""ResumableJobOperator: one external job per task instance, whatever happens to the worker.

The operator submits the job, keeps its id in task state *before* it polls, and on a
retry (a crash, a timeout, a lost connection) asks the service about the stored id:
still running, it keeps polling that job; succeeded, it returns its result at once;
failed or unknown, it submits a new one. Here the first try loses its connection
while polling (simulated), and the retry reattaches to the job the first try
submitted. Run it::

    stateward run examples/external_job.py --show-results
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

from stateward import Dag, JobStatus, ResumableJobOperator


class BatchService:
    """A stand-in for an external batch service: each job runs for two status polls."""

    def __init__(self) -> None:
        self._ids = itertools.count(2001)
        self.polls: dict[str, int] = {}

    def submit(self) -> str:
        job_id = f"export-{next(self._ids)}"
        self.polls[job_id] = 0
        return job_id

    def status(self, job_id: str) -> JobStatus:
        if job_id not in self.polls:
            return JobStatus.UNKNOWN
        self.polls[job_id] += 1
        return JobStatus.RUNNING if self.polls[job_id] <= 2 else JobStatus.SUCCEEDED


SERVICE = BatchService()


class WarehouseExport(ResumableJobOperator):
    """Export a table through the batch service; try 1 loses its connection (simulated)."""

    poll_interval: ClassVar[float] = 0.1

    def submit_job(self, context: Mapping[str, Any]) -> str:
        job_id = SERVICE.submit()
        print(f"[try {context['ti'].try_number}] submitted {job_id}; its id is in task state")
        return job_id

    def job_status(self, job_id: str, context: Mapping[str, Any]) -> JobStatus:
        try_number = context["ti"].try_number
        if try_number == 1:
            print(f"[try 1] lost the connection while polling {job_id} (simulated)")
            msg = f"lost the connection while polling {job_id}"
            raise ConnectionError(msg)
        status = SERVICE.status(job_id)
        print(f"[try {try_number}] polled {job_id}: {status.value}")
        return status

    def job_result(self, job_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
        return {"job_id": job_id, "rows": 4200}


dag = Dag("external_export", description="Export a table with an external batch job.")

export = WarehouseExport(task_id="export", dag=dag, retries=1, retry_delay=0)
