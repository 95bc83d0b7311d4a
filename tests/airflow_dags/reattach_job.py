"""A task that submits a long external job once and reattaches to it on retry.

Written for Airflow 3.3 (``airflow.sdk``); stateward runs it unchanged. The "external
service" is a folder of JSON files ($DEMO_JOBS_DIR), so a test can count submissions.
The first try dies right after submitting, as a worker lost mid-poll would.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task
from airflow.sdk.execution_time.context import NEVER_EXPIRE


def _jobs() -> Path:
    folder = Path(os.environ.get("DEMO_JOBS_DIR", "demo_jobs"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_export(table: str) -> str:
    job_id = f"export-{uuid.uuid4().hex[:8]}"
    (_jobs() / f"{job_id}.json").write_text(json.dumps({"table": table, "rows": 4200}))
    return job_id


def wait_for_export(job_id: str) -> dict:
    return json.loads((_jobs() / f"{job_id}.json").read_text())


with DAG(
    dag_id="reattach_job",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["task-state"],
    default_args={"owner": "data-eng", "retries": 2, "retry_delay": timedelta(seconds=1)},
    doc_md=__doc__,
) as dag:

    @task
    def export_orders(task_state_store=None, ti=None) -> int:
        job_id = task_state_store.get("job_id")
        if job_id is None:
            job_id = start_export("orders")
            task_state_store.set("job_id", job_id, retention=NEVER_EXPIRE)
            task_state_store.set("submitted_at", datetime.now(tz=UTC).isoformat())
            if ti.try_number == 1:
                raise RuntimeError(f"worker lost while {job_id} runs; the retry reattaches")
        else:
            print(f"try {ti.try_number}: reattaching to {job_id}")
        outcome = wait_for_export(job_id)
        task_state_store.set("status", "complete")
        return outcome["rows"]

    export_orders()
