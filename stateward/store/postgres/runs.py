"""Run records in PostgreSQL: the statements of the record operations, for one schema."""

from __future__ import annotations

from typing import Any

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
        one = f"{run} AND task_id = $3 AND map_index = $4"
        self.get_instance = (
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM {s}.task_instance WHERE {one}"
        )
        self.get_instance_attempts = (
            f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM {s}.task_attempt WHERE {one}"
        )
        self.instance_states = (
            f"SELECT task_id, map_index, state FROM {s}.task_instance WHERE {run}"
        )
        self.clear_instance = f"UPDATE {s}.task_instance SET state = '{CLEARED}' WHERE {one}"
        self.clear_state = f"DELETE FROM {s}.task_state WHERE {one}"
        self.queue_run = f"UPDATE {s}.dag_run SET state = '{QUEUED}' WHERE {run}"
        ended = ", ".join(f"'{state}'" for state in ENDED_RUN_STATES)
        old = f"SELECT dag_id, run_id FROM {s}.dag_run WHERE state IN ({ended}) AND ended_at < $1"
        self.count_old = f"SELECT count(*) FROM ({old}) AS old"
        self.delete_old = [
            f"DELETE FROM {s}.{table} WHERE (dag_id, run_id) IN ({old})"
            for table in ("task_attempt", "task_instance", "dag_run")
        ]

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
            case base.GetInstance(dag_id, run_id, task_id, map_index):
                instance = await conn.fetchrow(
                    self.get_instance, dag_id, run_id, task_id, map_index
                )
                if instance is None:
                    return None
                attempts = await conn.fetch(
                    self.get_instance_attempts, dag_id, run_id, task_id, map_index
                )
                return instance_from_rows(tuple(instance), [tuple(r) for r in attempts])
            case base.ClearRun():
                return await self._clear_run(conn, op)
            case base.CleanupRuns(ended_before, dry_run):
                if dry_run:
                    return int(await conn.fetchval(self.count_old, ended_before))
                for sql in self.delete_old:
                    status = await conn.execute(sql, ended_before)
                return int(status.rsplit(" ", 1)[-1])  # "DELETE n", of dag_run
            case _:
                msg = f"not a run-record operation: {op!r}"
                raise TypeError(msg)
        return None

    async def _clear_run(self, conn: Any, op: base.ClearRun) -> list[tuple[str, int]] | None:
        if await conn.fetchrow(self.get_run, op.dag_id, op.run_id) is None:
            return None
        rows = await conn.fetch(self.instance_states, op.dag_id, op.run_id)
        cleared = to_clear(op, (tuple(r) for r in rows))
        keys = [(op.dag_id, op.run_id, task_id, map_index) for task_id, map_index in cleared]
        if keys:
            await conn.executemany(self.clear_instance, keys)
            if not op.keep_task_state:
                await conn.executemany(self.clear_state, keys)
            await conn.execute(self.queue_run, op.dag_id, op.run_id)
        return cleared
