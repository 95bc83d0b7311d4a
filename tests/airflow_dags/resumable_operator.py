"""A ``ResumableJobMixin`` operator (Airflow 3.3): the job's id survives a lost worker.

Its templated fields render in order, so ``report_path`` can use the rendered
``job_name``. The "batch service" is a folder of JSON files ($DEMO_JOBS_DIR); polling
fails on the first try, as a dropped connection would.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, BaseOperator
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin


def _service() -> Path:
    folder = Path(os.environ.get("DEMO_JOBS_DIR", "demo_jobs"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class BatchJobOperator(ResumableJobMixin, BaseOperator):
    template_fields = ("job_name", "report_path")
    external_id_key = "batch_job_id"

    def __init__(self, *, job_name: str, report_path: str, **kwargs):
        super().__init__(**kwargs)
        self.job_name = job_name
        self.report_path = report_path
        self.polls: list[int] = []

    def execute(self, context):
        return self.execute_resumable(context)

    def submit_job(self, context):
        job_id = f"batch-{uuid.uuid4().hex[:8]}"
        (_service() / f"{job_id}.json").write_text(json.dumps({"name": self.job_name}))
        self.log.info("submitted %s", job_id)
        return job_id

    def get_job_status(self, external_id, context):
        return "RUNNING" if (_service() / f"{external_id}.json").exists() else "GONE"

    def is_job_active(self, status):
        return status == "RUNNING"

    def is_job_succeeded(self, status):
        return status == "SUCCEEDED"

    def poll_until_complete(self, external_id, context):
        self.polls.append(context["ti"].try_number)
        if context["ti"].try_number == 1:
            raise ConnectionError("lost the batch service while polling")

    def get_job_result(self, external_id, context):
        return {"job": external_id, "report": self.report_path, "polls": self.polls}


with DAG(dag_id="resumable_batch", schedule=None, start_date=datetime(2026, 1, 1)):
    BatchJobOperator(
        task_id="nightly_batch",
        job_name="nightly-{{ run_id }}",
        report_path="/reports/{{ task.job_name }}.csv",
        retries=1,
        owner="platform",
    )
