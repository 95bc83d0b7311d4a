"""A succeeding Dag: a mapped task keeps task state, a load keeps the asset's watermark."""

from __future__ import annotations

from stateward import Asset, Dag

ORDERS = Asset("orders", uri="s3://lake/orders")

dag = Dag("etl", params={"limit": 10, "label": "daily"}, description="Load orders.")


@dag.task
def extract(part, task_state):
    task_state.set("job_id", f"job-{part}")
    return part


@dag.task(outlets=[ORDERS])
def load(task_state, asset_state, params):
    task_state.set("params", params)
    asset_state.set("watermark", params["limit"])


extract.expand(part=["a", "b"]) >> load
