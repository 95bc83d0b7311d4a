"""Run records in SQLite: the statements of the record operations, on one connection."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from .. import base
from ..run_rows import (
    ATTEMPT_COLUMNS,
    ATTEMPT_KEYS,
    INSTANCE_COLUMNS,
    INSTANCE_KEYS,
    RUN_COLUMNS,
    RUN_KEYS,
    assemble,
    attempt_row,
    instance_row,
    instance_row_of_attempt,
    run_from_row,
    run_row,
    upsert,
)

_RUN: Final = "dag_id = ? AND run_id = ?"
_SQL: Final = {
    "run": upsert("dag_run", RUN_COLUMNS, RUN_KEYS, ["?"] * len(RUN_COLUMNS)),
    "instance": upsert(
        "task_instance", INSTANCE_COLUMNS, INSTANCE_KEYS, ["?"] * len(INSTANCE_COLUMNS)
    ),
    "attempt": upsert("task_attempt", ATTEMPT_COLUMNS, ATTEMPT_KEYS, ["?"] * len(ATTEMPT_COLUMNS)),
    "get_run": f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run WHERE {_RUN}",
    "get_instances": f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_RUN}",
    "get_attempts": f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_RUN}",
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
        case _:
            msg = f"not a run-record operation: {op!r}"
            raise TypeError(msg)
    return None
