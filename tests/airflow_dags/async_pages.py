"""An async task that fetches pages concurrently and checkpoints after each batch.

Airflow 3.3 style: ``async def`` with ``asyncio.gather`` / ``asyncio.sleep``. The
checkpoint uses the plain ``get`` / ``set``: Airflow 3.3.2's task state accessor has no
``aget`` / ``aset`` (its own example_task_state_store_async fails on that), and the
plain calls work from async code in both. The first try stops after two batches; the
retry resumes from the checkpoint. Every fetch is appended to $DEMO_FETCH_LOG, so a test can check
that no page was fetched twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime

from airflow.sdk import DAG, task
from airflow.sdk.execution_time.context import NEVER_EXPIRE

log = logging.getLogger(__name__)

PAGES = list(range(1, 11))
BATCH = 3


async def fetch(page: int) -> int:
    await asyncio.sleep(0.001)
    with open(os.environ.get("DEMO_FETCH_LOG", "fetched.log"), "a") as out:
        out.write(f"{page}\n")
    return page * 10


with DAG(dag_id="async_pages", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task(retries=1, retry_delay=0)
    async def ingest(task_state_store=None, ti=None) -> dict:
        progress = task_state_store.get("progress", default={"done": [], "rows": 0})
        done, rows = set(progress["done"]), progress["rows"]
        log.info("try %d starts with %d pages done", ti.try_number, len(done))
        todo = [page for page in PAGES if page not in done]
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            rows += sum(await asyncio.gather(*(fetch(page) for page in batch)))
            done.update(batch)
            task_state_store.set(
                "progress", {"done": sorted(done), "rows": rows}, retention=NEVER_EXPIRE
            )
            if ti.try_number == 1 and len(done) >= 2 * BATCH:
                raise RuntimeError(f"staged crash after {len(done)} pages")
        return {"pages": len(done), "rows": rows}

    ingest()
