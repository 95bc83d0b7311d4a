"""Run records in SQLite: the statements of the record operations, on one connection."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from .. import base
from ..run_rows import (
    ATTEMPT_COLUMNS,
    ATTEMPT_KEYS,
    CLEARED,
    ENDED_RUN_STATES,
    INSTANCE_COLUMNS,
    INSTANCE_KEYS,
    QUEUED,
    RUN_COLUMNS,
    RUN_KEYS,
    assemble,
    attempt_row,
    instance_from_rows,
    instance_row,
    instance_row_of_attempt,
    run_from_row,
    run_row,
    to_clear,
    upsert,
)

_RUN: Final = "dag_id = ? AND run_id = ?"
_INSTANCE: Final = f"{_RUN} AND task_id = ? AND map_index = ?"
#: The runs retention removes: ended before the parameter.
_OLD_RUNS: Final = (
    f"SELECT dag_id, run_id FROM dag_run WHERE state IN {ENDED_RUN_STATES!r} AND ended_at < ?"
)
_SQL: Final = {
    "run": upsert("dag_run", RUN_COLUMNS, RUN_KEYS, ["?"] * len(RUN_COLUMNS)),
    "instance": upsert(
        "task_instance", INSTANCE_COLUMNS, INSTANCE_KEYS, ["?"] * len(INSTANCE_COLUMNS)
    ),
    "attempt": upsert("task_attempt", ATTEMPT_COLUMNS, ATTEMPT_KEYS, ["?"] * len(ATTEMPT_COLUMNS)),
    "get_run": f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run WHERE {_RUN}",
    "get_instances": f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_RUN}",
    "get_attempts": f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_RUN}",
    "get_instance": f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_INSTANCE}",
    "get_instance_attempts": (
        f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_INSTANCE}"
    ),
    "clear_instance": f"UPDATE task_instance SET state = '{CLEARED}' WHERE {_INSTANCE}",
    "clear_state": f"DELETE FROM task_state WHERE {_INSTANCE}",
    "queue_run": f"UPDATE dag_run SET state = '{QUEUED}' WHERE {_RUN}",
}


def apply_run_op(conn: sqlite3.Connection, op: base.Op) -> Any:
    """Execute one run-record operation (see :mod:`stateward.store.base`)."""
    match op:
        case base.RecordRun():
            conn.execute(_SQL["run"], run_row(op))
        case base.RecordInstance():
            conn.execute(_SQL["instance"], instance_row(op))
        case base.RecordAttempt():
            conn.execute(_SQL["attempt"], attempt_row(op))
            conn.execute(_SQL["instance"], instance_row_of_attempt(op))
        case base.ListRuns(dag_id, state, limit):
            clauses = [f"{c} = ?" for c, v in (("dag_id", dag_id), ("state", state)) if v]
            where = " AND ".join(clauses) or "1"
            rows = conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run WHERE {where} "
                "ORDER BY started_at DESC, dag_id, run_id LIMIT ?",
                (*(v for v in (dag_id, state) if v), limit),
            )
            return tuple(run_from_row(row) for row in rows)
        case base.GetRun(dag_id, run_id):
            run = conn.execute(_SQL["get_run"], (dag_id, run_id)).fetchone()
            if run is None:
                return None
            instances = conn.execute(_SQL["get_instances"], (dag_id, run_id)).fetchall()
            attempts = conn.execute(_SQL["get_attempts"], (dag_id, run_id)).fetchall()
            return assemble(run, instances, attempts)
        case base.GetInstance(dag_id, run_id, task_id, map_index):
            key = (dag_id, run_id, task_id, map_index)
            instance = conn.execute(_SQL["get_instance"], key).fetchone()
            if instance is None:
                return None
            attempts = conn.execute(_SQL["get_instance_attempts"], key).fetchall()
            return instance_from_rows(instance, attempts)
        case base.ClearRun():
            return _clear_run(conn, op)
        case base.CleanupRuns(ended_before, dry_run):
            if dry_run:
                return conn.execute(
                    f"SELECT count(*) FROM ({_OLD_RUNS})", (ended_before,)
                ).fetchone()[0]
            for table in ("task_attempt", "task_instance"):
                conn.execute(
                    f"DELETE FROM {table} WHERE (dag_id, run_id) IN ({_OLD_RUNS})", (ended_before,)
                )
            return conn.execute(
                f"DELETE FROM dag_run WHERE (dag_id, run_id) IN ({_OLD_RUNS})", (ended_before,)
            ).rowcount
        case _:
            msg = f"not a run-record operation: {op!r}"
            raise TypeError(msg)
    return None


def _clear_run(conn: sqlite3.Connection, op: base.ClearRun) -> list[tuple[str, int]] | None:
    run = (op.dag_id, op.run_id)
    if conn.execute(_SQL["get_run"], run).fetchone() is None:
        return None
    rows = conn.execute(
        f"SELECT task_id, map_index, state FROM task_instance WHERE {_RUN}", run
    ).fetchall()
    cleared = to_clear(op, rows)
    keys = [(*run, task_id, map_index) for task_id, map_index in cleared]
    conn.executemany(_SQL["clear_instance"], keys)
    if not op.keep_task_state:
        conn.executemany(_SQL["clear_state"], keys)
    if cleared:
        conn.execute(_SQL["queue_run"], run)
    return cleared
