"""Server-side time of two `stateward ui` requests, each with its raw-SQL baseline.

1. The grid page for 100 runs of a 50-task Dag (``GET /?limit=100``), against raw
   sqlite3 reading the same rows (the 100 runs, their 5,000 instances and attempts).
2. One page of 100 keys of a task instance (``GET .../state-store?limit=100``) from a
   store of 1,000,000 task-state keys (10,000 instances of 100 keys), against raw
   sqlite3 reading those 100 rows by primary key with ``LIMIT 100``.
3. One key (``GET .../state-store/KEY``) of a task instance that holds 10,000 keys,
   against raw sqlite3 reading that row by primary key; and the last page of 100 of
   those keys (``?offset=9900``, with ``total_entries``), against raw sqlite3 reading
   them with ``LIMIT 100 OFFSET 9900`` and counting the instance's rows.

Each run records its Dag's graph (a 50-task chain), as runs do since schema 7; the grid
is timed again with the graphs removed (``grid_without_graph_ms``, runs recorded
before), which is what the graph costs a listing.

Requests go through the ASGI app in-process (httpx's ASGI transport): the server's
own time, without the network. Rows are inserted with raw SQL (the setup is not what
is measured). Usage: ``python bench/ui_pages.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

import httpx
import trio

from _common import emit, machine, median, tmp_db
from stateward import open_runtime
from stateward._ui.app import make_app

RUNS, TASKS = 100, 50
INSTANCES, KEYS = 10_000, 100
#: The keys of the one wide instance (``wide/run0/task``) whose single key is read.
WIDE_KEYS = 10_000
TOKEN = "bench"


def create(path: Path) -> None:
    """Make the schema (a runtime opening the file), then fill it with raw SQL."""

    async def open_once() -> None:
        async with open_runtime(path):
            pass

    trio.run(open_once)
    conn = sqlite3.connect(path)
    start = time.time() - 86400
    with conn:
        # Each run records its Dag's graph (a chain of the 50 tasks), as runs do now.
        graph = json.dumps([
            {"task_id": f"task{t:02}", "upstream": [f"task{t - 1:02}"] if t else [],
             "mapped": False}
            for t in range(TASKS)
        ])  # fmt: skip
        conn.executemany(
            "INSERT INTO dag_run (dag_id, run_id, state, started_at, ended_at, graph) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [("grid", f"run{r:03}", "success", start + r * 60, start + r * 60 + 50, graph)
             for r in range(RUNS)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO task_instance (dag_id, run_id, task_id, map_index, state, try_number,"
            " started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [("grid", f"run{r:03}", f"task{t:02}", -1, "success", 1,
              start + r * 60 + t, start + r * 60 + t + 1)
             for r in range(RUNS) for t in range(TASKS)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO task_attempt (dag_id, run_id, task_id, map_index, try_number, state,"
            " started_at, ended_at, rendered, result_is_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [("grid", f"run{r:03}", f"task{t:02}", -1, 1, "success",
              start + r * 60 + t, start + r * 60 + t + 1, "{}", 1)
             for r in range(RUNS) for t in range(TASKS)],
        )  # fmt: skip
        rows = (
            ("keys", f"run{i // 100:03}", f"task{i % 100:02}", "", -1, f"key{k:03}",
             json.dumps({"n": k}), start, None)
            for i in range(INSTANCES) for k in range(KEYS)
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO task_state (dag_id, run_id, task_id, item, map_index, key, value,"
            " updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute(
            "INSERT INTO dag_run (dag_id, run_id, state, started_at, ended_at) "
            "VALUES ('wide', 'run0', 'success', ?, ?)",
            (start - 3600, start - 3599),  # older than the grid's runs
        )
        conn.execute(
            "INSERT INTO task_instance (dag_id, run_id, task_id, map_index, state, try_number,"
            " started_at, ended_at) VALUES ('wide', 'run0', 'task', -1, 'success', 1, ?, ?)",
            (start, start + 1),
        )
        conn.executemany(
            "INSERT INTO task_state (dag_id, run_id, task_id, item, map_index, key, value,"
            " updated_at, expires_at) VALUES ('wide', 'run0', 'task', '', -1, ?, ?, ?, NULL)",
            ((f"key{k:05}", json.dumps({"n": k}), start) for k in range(WIDE_KEYS)),
        )
    conn.close()


def raw_grid(conn: sqlite3.Connection) -> int:
    runs = conn.execute(
        "SELECT dag_id, run_id, state, started_at, ended_at, graph FROM dag_run "
        "ORDER BY started_at DESC LIMIT ?",
        (RUNS,),
    ).fetchall()
    count = 0
    for dag_id, run_id, *_ in runs:
        count += len(conn.execute(
            "SELECT * FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall())  # fmt: skip
        conn.execute(
            "SELECT * FROM task_attempt WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    return count


def raw_page(conn: sqlite3.Connection) -> int:
    rows = conn.execute(
        "SELECT key, value, updated_at, expires_at FROM task_state WHERE dag_id = ? "
        "AND run_id = ? AND task_id = ? AND map_index = ? ORDER BY key LIMIT 100",
        ("keys", "run050", "task50", -1),
    ).fetchall()
    for row in rows:
        json.loads(row[1])
    return len(rows)


def raw_one_key(conn: sqlite3.Connection) -> int:
    (row,) = conn.execute(
        "SELECT key, value, updated_at, expires_at FROM task_state WHERE dag_id = ? "
        "AND run_id = ? AND task_id = ? AND item = '' AND key = ?",
        ("wide", "run0", "task", f"key{WIDE_KEYS // 2:05}"),
    ).fetchall()
    return int(json.loads(row[1])["n"])


def raw_wide_page(conn: sqlite3.Connection) -> int:
    where = "dag_id = 'wide' AND run_id = 'run0' AND task_id = 'task' AND item = ''"
    rows = conn.execute(
        f"SELECT key, value, updated_at, expires_at FROM task_state WHERE {where} "
        "ORDER BY key LIMIT 100 OFFSET ?",
        (WIDE_KEYS - 100,),
    ).fetchall()
    for row in rows:
        json.loads(row[1])
    (total,) = conn.execute(f"SELECT COUNT(*) FROM task_state WHERE {where}").fetchone()
    assert total == WIDE_KEYS
    return len(rows)


def time_ms(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


async def measure(path: Path, repeat: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with open_runtime(path) as rt:
        app = make_app(rt, token=TOKEN)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ui", headers=headers
        ) as client:
            page = "/api/v2/dags/keys/dagRuns/run050/taskInstances/task50/state-store"
            wide = "/api/v2/dags/wide/dagRuns/run0/taskInstances/task/state-store"
            for name, url in (
                ("grid_ms", "/?limit=100"),
                ("keys_page_ms", f"{page}?limit=100"),
                ("one_key_ms", f"{wide}/key{WIDE_KEYS // 2:05}"),
                ("wide_page_ms", f"{wide}?limit=100&offset={WIDE_KEYS - 100}"),
            ):
                response = await client.get(url)  # warm-up, and a check of the answer
                assert response.status_code == 200, response.text[:200]
                if name == "keys_page_ms":
                    assert len(response.json()["task_state_store"]) == KEYS
                elif name == "one_key_ms":
                    assert response.json()["value"] == {"n": WIDE_KEYS // 2}
                elif name == "wide_page_ms":
                    assert len(response.json()["task_state_store"]) == 100
                    assert response.json()["total_entries"] == WIDE_KEYS
                else:
                    assert response.text.count('data-state="success"') == RUNS * TASKS
                times = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    await client.get(url)
                    times.append((time.perf_counter() - start) * 1000)
                figures[name] = median(times)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    path = tmp_db("ui.db")
    create(path)
    conn = sqlite3.connect(path)
    assert raw_page(conn) == KEYS
    assert raw_grid(conn) == RUNS * TASKS
    assert raw_one_key(conn) == WIDE_KEYS // 2
    assert raw_wide_page(conn) == 100
    raw_grid_ms = time_ms(args.repeat, lambda: raw_grid(conn))
    raw_page_ms = time_ms(args.repeat, lambda: raw_page(conn))
    raw_one_key_ms = time_ms(args.repeat, lambda: raw_one_key(conn))
    raw_wide_page_ms = time_ms(args.repeat, lambda: raw_wide_page(conn))
    conn.close()
    ours = trio.run(measure, path, args.repeat)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE dag_run SET graph = NULL")
    conn.close()
    without = trio.run(measure, path, args.repeat)
    emit(
        "ui_pages",
        store="sqlite",
        runs=RUNS,
        tasks=TASKS,
        keys=INSTANCES * KEYS,
        grid_ms=round(ours["grid_ms"], 1),
        raw_grid_ms=round(raw_grid_ms, 2),
        ratio_grid_vs_raw=round(ours["grid_ms"] / raw_grid_ms, 1),
        grid_without_graph_ms=round(without["grid_ms"], 1),
        ratio_grid_vs_without_graph=round(ours["grid_ms"] / without["grid_ms"], 2),
        keys_page_ms=round(ours["keys_page_ms"], 2),
        raw_keys_page_ms=round(raw_page_ms, 3),
        ratio_keys_page_vs_raw=round(ours["keys_page_ms"] / raw_page_ms, 1),
        wide_keys=WIDE_KEYS,
        one_key_ms=round(ours["one_key_ms"], 2),
        raw_one_key_ms=round(raw_one_key_ms, 3),
        ratio_one_key_vs_raw=round(ours["one_key_ms"] / raw_one_key_ms, 1),
        wide_page_ms=round(ours["wide_page_ms"], 2),
        raw_wide_page_ms=round(raw_wide_page_ms, 3),
        ratio_wide_page_vs_raw=round(ours["wide_page_ms"] / raw_wide_page_ms, 1),
        **machine(),
    )


if __name__ == "__main__":
    main()
