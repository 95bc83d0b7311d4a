"""Dynamic task mapping: one instance per table an upstream task lists, each with its
own task state (Airflow 3.3 style). The instance for "customers" fails its first try.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(dag_id="mapped_tables", schedule=None, start_date=datetime(2026, 1, 1)) as dag:

    @task
    def list_tables() -> list[str]:
        return ["orders", "customers", "products"]

    @task(retries=1)
    def copy_table(table: str, prefix: str, task_state_store=None, ti=None) -> dict:
        tries = task_state_store.get("tries", default=0) + 1
        task_state_store.set("tries", tries)
        task_state_store.set("table", table)
        if table == "customers" and ti.try_number == 1:
            raise RuntimeError("lost the connection to customers")
        return {"table": f"{prefix}{table}", "map_index": ti.map_index, "tries": tries}

    @task
    def summarize(copied: list[dict]) -> list[str]:
        return [item["table"] for item in copied]

    summarize(copy_table.partial(prefix="raw_").expand(table=list_tables()))
