"""An asset producer that advances a watermark, and a consumer that reads it.

Two Dags in one file, neither bound to a name (Airflow 3.3 style). The watermark lives
on the asset, so it carries over from run to run.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

ORDERS = Asset(name="orders_daily", uri="s3://warehouse/orders/daily")

with DAG(dag_id="orders_producer", schedule=None, start_date=datetime(2026, 1, 1)):

    @task(inlets=[ORDERS], outlets=[ORDERS])
    def load_new_orders(asset_state_store=None) -> int:
        state = asset_state_store[ORDERS]
        watermark = state.get("watermark", default=0)
        new_rows = list(range(watermark, watermark + 5))
        state.set("watermark", watermark + len(new_rows))
        state.set("runs", state.get("runs", default=0) + 1)
        return len(new_rows)

    load_new_orders()

with DAG(dag_id="orders_consumer", schedule=[ORDERS], start_date=datetime(2026, 1, 1)):

    @task(inlets=[ORDERS])
    def report(asset_state_store=None) -> str:
        state = asset_state_store[ORDERS]
        return f"{state.get('runs')} loads, up to row {state.get('watermark')}"

    report()
