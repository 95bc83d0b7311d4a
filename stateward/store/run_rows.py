"""The rows of run records, shared by the stores: columns, encoding, statements.

A run, a task instance and an attempt are each one row, written with an upsert keyed
by their identity, so a record is written when its subject starts and again when it
ends. Every store keeps the same tuples (the memory store in dicts), so decoding and
assembling a :class:`~stateward.records.DagRunRecord` is written once, here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from .._records import AttemptRecord, DagRunRecord, TaskInstanceRecord, TaskNode
from . import base

RUN_KEYS: Final = ("dag_id", "run_id")
RUN_COLUMNS: Final = (*RUN_KEYS, "state", "started_at", "ended_at", "graph")
#: Columns an update leaves as they are when it gives ``NULL``.
RUN_KEPT: Final = ("graph",)
INSTANCE_KEYS: Final = (*RUN_KEYS, "task_id", "map_index")
INSTANCE_COLUMNS: Final = (*INSTANCE_KEYS, "state", "try_number", "started_at", "ended_at")
ATTEMPT_KEYS: Final = (*INSTANCE_KEYS, "try_number")
ATTEMPT_COLUMNS: Final = (
    *ATTEMPT_KEYS, "state", "started_at", "ended_at", "error_type", "error_message",
    "error_traceback", "rendered", "result", "result_is_json", "host", "pid", "log",
)  # fmt: skip


#: The run states whose records retention may remove: runs that ended (a ``running``
#: run may still be written; a ``queued`` one waits to be resumed).
ENDED_RUN_STATES: Final = ("success", "failed")
#: The instance states ``failed_only`` clears (Airflow's "only failed").
FAILED_INSTANCE_STATES: Final = ("failed", "upstream_failed")
#: The state of a cleared instance, and of a run with instances cleared.
CLEARED: Final = "cleared"
QUEUED: Final = "queued"


def to_clear(op: base.ClearRun, instances: Iterable[Sequence[Any]]) -> list[tuple[str, int]]:
    """Which of a run's instances ``op`` clears, from ``(task_id, map_index, state)``
    rows, sorted."""
    return sorted(
        (task_id, map_index)
        for task_id, map_index, state in instances
        if (op.task_ids is None or task_id in op.task_ids)
        and (not op.failed_only or state in FAILED_INSTANCE_STATES)
    )


def run_row(op: base.RecordRun) -> tuple[Any, ...]:
    """The ``dag_run`` row of ``op``, in :data:`RUN_COLUMNS` order (the graph as JSON
    text: ``[{"task_id", "upstream", "mapped"}, ...]``, or ``None``)."""
    graph = None
    if op.graph is not None:
        nodes = [
            {"task_id": n.task_id, "upstream": list(n.upstream_task_ids), "mapped": n.mapped}
            for n in op.graph
        ]
        graph = json.dumps(nodes, separators=(",", ":"))
    return (op.dag_id, op.run_id, op.state, op.started_at, op.ended_at, graph)


@functools.lru_cache(maxsize=256)
def graph_from_text(text: str | None) -> tuple[TaskNode, ...]:
    """The recorded graph (empty: none recorded). Remembered: the runs of one Dag
    record the same text, and the records are immutable."""
    if text is None:
        return ()
    return tuple(
        TaskNode(n["task_id"], tuple(n["upstream"]), bool(n["mapped"])) for n in json.loads(text)
    )


def instance_row(op: base.RecordInstance) -> tuple[Any, ...]:
    """The ``task_instance`` row of ``op``, in :data:`INSTANCE_COLUMNS` order."""
    return (
        op.dag_id, op.run_id, op.task_id, op.map_index, op.state, op.try_number,
        op.started_at, op.ended_at,
    )  # fmt: skip


def instance_row_of_attempt(op: base.RecordAttempt) -> tuple[Any, ...]:
    """The ``task_instance`` row a :class:`~base.RecordAttempt` also writes."""
    a = op.attempt
    return (
        op.dag_id, op.run_id, op.task_id, op.map_index, op.instance_state, a.try_number,
        a.started_at, a.ended_at,
    )  # fmt: skip


def attempt_row(op: base.RecordAttempt) -> tuple[Any, ...]:
    """The ``task_attempt`` row of ``op``, in :data:`ATTEMPT_COLUMNS` order.

    The rendered fields are JSON text (a value JSON cannot hold is kept as its repr);
    the result is JSON text when ``result_is_json``, else the repr text as given.
    """
    a = op.attempt
    return _attempt_row(op.dag_id, op.run_id, op.task_id, op.map_index, a, a.try_number, a.state)


#: ``json.dumps(..., default=repr, sort_keys=True)``, without making an encoder per call.
_RENDERED_JSON: Final = json.JSONEncoder(default=repr, sort_keys=True)


def _attempt_row(
    dag_id: str, run_id: str, task_id: str, map_index: int, a: AttemptRecord,
    try_number: int, state: str,
) -> tuple[Any, ...]:  # fmt: skip
    """The ``task_attempt`` row of ``a`` at ``try_number`` in ``state``."""
    rendered = "{}" if a.rendered == {} else _RENDERED_JSON.encode(a.rendered)
    if a.result is None:
        result = None
    elif a.result_is_json:
        result = json.dumps(a.result)
    else:
        result = str(a.result)
    return (
        dag_id, run_id, task_id, map_index, try_number, state, a.started_at, a.ended_at,
        a.error_type, a.error_message, a.error_traceback, rendered, result, a.result_is_json,
        a.host, a.pid, a.log,
    )  # fmt: skip


#: The lease columns of ``task_instance`` (schema version 6): the holding runtime's id,
#: the try it holds the lease for, and when the lease expires (the store's clock).
LEASE_COLUMNS: Final = ("lease_holder", "lease_try", "lease_expires")
#: The index of an attempt row's ``state``.
ATTEMPT_STATE: Final = ATTEMPT_COLUMNS.index("state")


def acquired_rows(
    op: base.AcquireLease, try_number: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The rows an acquisition writes, in :data:`INSTANCE_COLUMNS` and
    :data:`ATTEMPT_COLUMNS` order: the instance ``running`` at the new try, and
    ``op.attempt`` as that try, ``running``."""
    a = op.attempt
    key = (op.dag_id, op.run_id, op.task_id, op.map_index)
    instance = (*key, "running", try_number, a.started_at, a.ended_at)
    return instance, _attempt_row(*key, a, try_number, "running")


def run_from_row(row: Sequence[Any]) -> DagRunRecord:
    """A run record (no instances) from a ``dag_run`` row."""
    dag_id, run_id, state, started_at, ended_at, graph = row
    return DagRunRecord(dag_id, run_id, state, started_at, ended_at, graph=graph_from_text(graph))


def _attempt_from_row(row: Sequence[Any]) -> AttemptRecord:
    (try_number, state, started_at, ended_at, error_type, error_message, error_traceback,
     rendered, result, result_is_json, host, pid, log) = row[len(INSTANCE_KEYS):]  # fmt: skip
    is_json = bool(result_is_json)
    value = json.loads(result) if is_json and result is not None else result
    return AttemptRecord(
        try_number, state, started_at, ended_at, error_type, error_message, error_traceback,
        json.loads(rendered), value, is_json, host, pid, log,
    )  # fmt: skip


def instance_from_rows(
    instance: Sequence[Any], attempts: Iterable[Sequence[Any]]
) -> TaskInstanceRecord:
    """One instance's record from its row and its attempts' rows (in any order)."""
    _, _, task_id, map_index, state, try_number, started_at, ended_at = instance
    tries = sorted((_attempt_from_row(row) for row in attempts), key=lambda a: a.try_number)
    return TaskInstanceRecord(
        task_id, map_index, state, try_number, started_at, ended_at, tuple(tries)
    )


def assemble(
    run: Sequence[Any], instances: Iterable[Sequence[Any]], attempts: Iterable[Sequence[Any]]
) -> DagRunRecord:
    """One run's record from its rows (instances and attempts in any order)."""
    by_instance: dict[tuple[str, int], list[Sequence[Any]]] = {}
    for row in attempts:
        by_instance.setdefault((row[2], row[3]), []).append(row)
    records = [
        instance_from_rows(row, by_instance.get((row[2], row[3]), []))
        for row in sorted(instances, key=lambda r: (r[2], r[3]))
    ]
    dag_id, run_id, state, started_at, ended_at, graph = run
    return DagRunRecord(
        dag_id, run_id, state, started_at, ended_at, tuple(records), graph_from_text(graph)
    )


def run_sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    """Listing order of runs: newest start first, then by DAG and run id."""
    return (-row[3], row[0], row[1])


def upsert(
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    marks: Sequence[str],
    kept: Sequence[str] = (),
) -> str:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE``: the statement both SQL stores use.
    A column of ``kept`` keeps its stored value when the new row gives ``NULL``."""
    updates = ", ".join(
        f"{c} = COALESCE(excluded.{c}, old.{c})" if c in kept else f"{c} = excluded.{c}"
        for c in columns
        if c not in keys
    )
    return (
        f"INSERT INTO {table} AS old ({', '.join(columns)}) VALUES ({', '.join(marks)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )
