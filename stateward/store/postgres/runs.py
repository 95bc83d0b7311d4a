"""Run records in PostgreSQL: the statements of the record operations, for one schema."""

from __future__ import annotations

from typing import Any

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


def _marks(n: int) -> list[str]:
    return [f"${i}" for i in range(1, n + 1)]


class RunStatements:
    """The record operations' statements in one schema (``s``: its quoted name)."""

    def __init__(self, s: str) -> None:
        run = "dag_id = $1 AND run_id = $2"
        self.run = upsert(f"{s}.dag_run", RUN_COLUMNS, RUN_KEYS, _marks(len(RUN_COLUMNS)))
        self.instance = upsert(
            f"{s}.task_instance", INSTANCE_COLUMNS, INSTANCE_KEYS, _marks(len(INSTANCE_COLUMNS))
        )
        self.attempt = upsert(
            f"{s}.task_attempt", ATTEMPT_COLUMNS, ATTEMPT_KEYS, _marks(len(ATTEMPT_COLUMNS))
        )
        self.runs = f"SELECT {', '.join(RUN_COLUMNS)} FROM {s}.dag_run"
        self.get_run = f"{self.runs} WHERE {run}"
        self.get_instances = (
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM {s}.task_instance WHERE {run}"
        )
        self.get_attempts = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM {s}.task_attempt WHERE {run}"

    async def apply(self, conn: Any, op: base.Op) -> Any:
        """Execute one run-record operation (see :mod:`stateward.store.base`)."""
        match op:
            case base.RecordRun():
                await conn.execute(self.run, *run_row(op))
            case base.RecordInstance():
                await conn.execute(self.instance, *instance_row(op))
            case base.RecordAttempt():
                await conn.execute(self.attempt, *attempt_row(op))
                await conn.execute(self.instance, *instance_row_of_attempt(op))
            case base.ListRuns(dag_id, state, limit):
                given = [(c, v) for c, v in (("dag_id", dag_id), ("state", state)) if v]
                clauses = [f"{c} = ${i}" for i, (c, _) in enumerate(given, start=1)]
                rows = await conn.fetch(
                    f"{self.runs} WHERE {' AND '.join(clauses) or 'true'} "
                    f"ORDER BY started_at DESC, dag_id, run_id LIMIT ${len(given) + 1}",
                    *(v for _, v in given),
                    limit,
                )
                return tuple(run_from_row(tuple(row)) for row in rows)
            case base.GetRun(dag_id, run_id):
                run = await conn.fetchrow(self.get_run, dag_id, run_id)
                if run is None:
                    return None
                instances = await conn.fetch(self.get_instances, dag_id, run_id)
                attempts = await conn.fetch(self.get_attempts, dag_id, run_id)
                return assemble(
                    tuple(run), [tuple(r) for r in instances], [tuple(r) for r in attempts]
                )
            case _:
                msg = f"not a run-record operation: {op!r}"
                raise TypeError(msg)
        return None
