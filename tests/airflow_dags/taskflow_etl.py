"""TaskFlow data passing with ``@dag``: each task's return value is the next one's
argument. ``load`` fails while $DEMO_FAIL_LOAD is set, to show a resumed run passing
the recorded results on without running ``extract`` again.
"""

from __future__ import annotations

import os

from airflow.sdk import dag, get_current_context, task


@dag(schedule=None, catchup=False, tags=["taskflow"])
def taskflow_etl():
    @task
    def extract() -> dict:
        with open(os.environ.get("DEMO_EXTRACT_LOG", "extract.log"), "a") as out:
            out.write("extract\n")
        return {"orders": [12, 30, 8]}

    @task(multiple_outputs=True)
    def transform(data: dict) -> dict:
        return {"total": sum(data["orders"]), "count": len(data["orders"])}

    @task
    def load(total: int, count: int) -> str:
        if os.environ.get("DEMO_FAIL_LOAD"):
            raise RuntimeError("the warehouse is down")
        return f"{get_current_context()['run_id']}: {count} orders, {total} in all"

    summary = transform(extract())
    load(summary["total"], count=summary["count"])


taskflow_etl()
