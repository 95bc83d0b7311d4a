"""Run records and leases in SQLite: the statements of their operations, on one
connection. A lease expires by the local wall clock (the batch's ``now``)."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from ..._records import Lease, LeaseAnswer
from .. import base
from ..run_rows import (
    ATTEMPT_COLUMNS,
    ATTEMPT_KEYS,
    CLEARED,
    ENDED_RUN_STATES,
    INSTANCE_COLUMNS,
    INSTANCE_KEYS,
    LEASE_COLUMNS,
    QUEUED,
    RUN_COLUMNS,
    RUN_KEPT,
    RUN_KEYS,
    acquired_rows,
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
_HELD: Final = f"{_INSTANCE} AND lease_holder = ? AND lease_try = ?"
#: What most acquisitions answer (an instance's first try); the answers are values.
_ACQUIRED_FIRST: Final = base.lease_answer("acquired", 1, None, None)
#: A recorded item adopting the state (and history) its position kept, unless it
#: holds some already.
_ADOPT: Final = tuple(
    f"UPDATE {table} SET item = ? WHERE dag_id = ? AND run_id = ? AND task_id = ? "
    f"AND item = ? AND NOT EXISTS (SELECT 1 FROM {table} WHERE dag_id = ? "
    "AND run_id = ? AND task_id = ? AND item = ?)"
    for table in ("task_state", "task_state_history")
)
_SQL: Final = {
    "run": upsert("dag_run", RUN_COLUMNS, RUN_KEYS, ["?"] * len(RUN_COLUMNS), RUN_KEPT),
    "instance": upsert(
        "task_instance", INSTANCE_COLUMNS, INSTANCE_KEYS, ["?"] * len(INSTANCE_COLUMNS)
    ),
    "attempt": upsert("task_attempt", ATTEMPT_COLUMNS, ATTEMPT_KEYS, ["?"] * len(ATTEMPT_COLUMNS)),
    "get_run": f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run WHERE {_RUN}",
    "get_instances": f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_RUN}",
    "instance_states": f"SELECT task_id, map_index, state FROM task_instance WHERE {_RUN}",
    "get_attempts": f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_RUN}",
    "get_instance": f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_INSTANCE}",
    "get_instance_attempts": (
        f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_INSTANCE}"
    ),
    # Clearing gives up the instance's lease (its attempt, if one runs, is fenced off)
    # and records an attempt left running abandoned.
    "clear_instance": f"UPDATE task_instance SET state = '{CLEARED}', lease_holder = NULL, "
    f"lease_try = NULL, lease_expires = NULL WHERE {_INSTANCE}",
    "abandon_running": f"UPDATE task_attempt SET state = 'abandoned' WHERE {_INSTANCE} "
    "AND state = 'running'",
    "clear_state": f"DELETE FROM task_state WHERE {_INSTANCE}",
    "queue_run": f"UPDATE dag_run SET state = '{QUEUED}' WHERE {_RUN}",
    "holds": f"SELECT 1 FROM task_instance WHERE {_HELD}",
    "current": (
        "SELECT state, try_number, lease_holder, lease_expires, "
        f"{', '.join(INSTANCE_COLUMNS)} FROM task_instance WHERE {_INSTANCE}"
    ),
    "last_attempt": f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM task_attempt WHERE {_INSTANCE} "
    "AND try_number = ?",
    "abandon": f"UPDATE task_attempt SET state = 'abandoned' WHERE {_INSTANCE} "
    "AND try_number = ? AND state = 'running'",
    # An acquisition: the instance at its new try, running, with the lease, in one
    # upsert; a first one (no record yet) inserts it or finds it there.
    "leased": upsert(
        "task_instance",
        (*INSTANCE_COLUMNS, *LEASE_COLUMNS),
        INSTANCE_KEYS,
        ["?"] * (len(INSTANCE_COLUMNS) + len(LEASE_COLUMNS)),
    ),
    "first": (
        f"INSERT INTO task_instance ({', '.join((*INSTANCE_COLUMNS, *LEASE_COLUMNS))}) "
        f"VALUES ({', '.join('?' * (len(INSTANCE_COLUMNS) + len(LEASE_COLUMNS)))}) "
        "ON CONFLICT DO NOTHING"
    ),
    "item_seq": "SELECT COALESCE(MAX(seq), 0) FROM task_item WHERE dag_id = ? AND run_id = ? "
    "AND task_id = ?",
    "item": "INSERT INTO task_item (dag_id, run_id, task_id, map_index, item, label, seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dag_id, run_id, task_id, item) DO UPDATE SET "
    "map_index = excluded.map_index, label = excluded.label, seq = excluded.seq",
    # Whether the task holds state kept by position ('#i'), which a recorded item adopts.
    "positional": " UNION ALL ".join(
        f"SELECT 1 FROM (SELECT 1 FROM {table} WHERE dag_id = ? AND run_id = ? "
        "AND task_id = ? AND item >= '#' AND item < '$' LIMIT 1)"
        for table in ("task_state", "task_state_history")
    ),
    # The end of a leased attempt: written only while its lease holds; a final state
    # gives the lease up in the same statement.
    "ended": (
        "UPDATE task_instance SET state = ?, try_number = ?, started_at = ?, ended_at = ?, "
        "lease_holder = CASE WHEN ? THEN NULL ELSE lease_holder END, "
        "lease_try = CASE WHEN ? THEN NULL ELSE lease_try END, "
        "lease_expires = CASE WHEN ? THEN NULL ELSE lease_expires END "
        f"WHERE {_HELD}"
    ),
    "renew": "UPDATE task_instance SET lease_expires = ? WHERE lease_holder = ? "
    "RETURNING dag_id, run_id, task_id, map_index, lease_try",
    "release": "UPDATE task_instance SET lease_holder = NULL, lease_try = NULL, "
    "lease_expires = NULL WHERE lease_holder = ?",
    "release_given": "UPDATE task_instance SET lease_holder = NULL, lease_try = NULL, "
    f"lease_expires = NULL WHERE {_HELD}",
}


def holds(conn: sqlite3.Connection, lease: Lease) -> bool:
    """Whether the instance's lease is ``lease`` (one primary-key lookup)."""
    return (
        conn.execute(_SQL["holds"], (*lease.instance, lease.holder, lease.try_number)).fetchone()
        is not None
    )


def _acquire(conn: sqlite3.Connection, op: base.AcquireLease, now: float) -> LeaseAnswer:
    key = (op.dag_id, op.run_id, op.task_id, op.map_index)
    expires = now + op.timeout
    first = op.first_try
    instance, attempt = acquired_rows(op, first)
    # Most acquisitions are an instance's first: its record inserted leased, in one
    # statement (the batch holds the write lock: no other writer comes in between).
    if conn.execute(_SQL["first"], (*instance, op.holder, first, expires)).rowcount:
        conn.execute(_SQL["attempt"], attempt)
        return _ACQUIRED_FIRST if first == 1 else base.lease_answer("acquired", first, None, None)
    found = conn.execute(_SQL["current"], key).fetchone()
    current = None if found is None else found[:4]
    outcome, try_number = base.decide_lease(op, current, now)
    if outcome == "finished":
        attempts = conn.execute(_SQL["last_attempt"], (*key, try_number)).fetchall()
        return base.lease_answer(
            outcome, try_number, None, None, instance_from_rows(found[4:], attempts)
        )
    if outcome == "held":
        return base.lease_answer(outcome, try_number, found[2], found[3])
    if found is not None and found[0] == "running":
        conn.execute(_SQL["abandon"], (*key, found[1]))
    instance, attempt = acquired_rows(op, try_number)
    conn.execute(_SQL["attempt"], attempt)
    conn.execute(_SQL["leased"], (*instance, op.holder, try_number, expires))
    return base.lease_answer(outcome, try_number, None, None)


def _record_items(conn: sqlite3.Connection, op: base.RecordItems) -> None:
    """Record an expansion's items in order, each with the task's next ``seq``; state
    kept by position is adopted only if the task holds any (one read says)."""
    task = (op.dag_id, op.run_id, op.task_id)
    seq = conn.execute(_SQL["item_seq"], task).fetchone()[0]
    conn.executemany(
        _SQL["item"],
        [(*task, i, item, label, seq + n) for n, (i, item, label) in enumerate(op.places, 1)],
    )
    if conn.execute(_SQL["positional"], task * 2).fetchone() is None:
        return
    for map_index, item, _ in op.places:
        position = base.position_item(map_index)
        if item != position:
            for sql in _ADOPT:
                conn.execute(sql, (item, *task, position, *task, item))


def _ended(conn: sqlite3.Connection, op: base.RecordAttempt) -> None:
    """Record a leased attempt's end, if its lease still holds."""
    a = op.attempt
    # An int, not a bool: sqlite3 adapts every parameter not exactly an int, float or
    # str (a registry lookup each time it binds one).
    final = int(op.instance_state in base.FINAL_STATES)
    holder = op.holder or ""
    written = conn.execute(
        _SQL["ended"],
        (op.instance_state, a.try_number, a.started_at, a.ended_at, final, final, final,
         op.dag_id, op.run_id, op.task_id, op.map_index, holder, a.try_number),
    ).rowcount  # fmt: skip
    if not written:
        lease = Lease(op.dag_id, op.run_id, op.task_id, op.map_index, holder, a.try_number)
        raise base.stale_error(lease, "the record of its end")
    conn.execute(_SQL["attempt"], attempt_row(op))


def apply_run_op(conn: sqlite3.Connection, op: base.Op, now: float) -> Any:
    """Execute one run-record or lease operation (see :mod:`stateward.store.base`)."""
    match op:
        case base.RecordItems():
            _record_items(conn, op)
        case base.RecordRun():
            conn.execute(_SQL["run"], run_row(op))
        case base.EndRun(dag_id, run_id):
            rows = conn.execute(_SQL["instance_states"], (dag_id, run_id))
            record = op.record({(task_id, i): state for task_id, i, state in rows})
            conn.execute(_SQL["run"], run_row(record))
            return record.state
        case base.RecordInstance():
            conn.execute(_SQL["instance"], instance_row(op))
        case base.RecordAttempt(holder=None):
            conn.execute(_SQL["attempt"], attempt_row(op))
            conn.execute(_SQL["instance"], instance_row_of_attempt(op))
        case base.RecordAttempt():
            _ended(conn, op)
        case base.AcquireLease():
            return _acquire(conn, op, now)
        case base.FindUnheld(holder, asked):
            unheld = []
            for i, (*ident, seen_try) in enumerate(asked):
                found = conn.execute(_SQL["current"], ident).fetchone()
                current = None if found is None else found[:4]
                probe = base.LeaseProbe(holder, seen_try)
                if base.decide_lease(probe, current, now)[0] != "held":
                    unheld.append(i)
            return tuple(unheld)
        case base.RenewLeases(holder, timeout):
            return tuple(conn.execute(_SQL["renew"], (now + timeout, holder)).fetchall())
        case base.ReleaseLeases(holder, leases):
            if leases is None:
                return conn.execute(_SQL["release"], (holder,)).rowcount
            given = [(d, r, t, i, holder, n) for d, r, t, i, n in leases]
            return conn.executemany(_SQL["release_given"], given).rowcount
        case base.ListRuns(dag_id, state, limit):
            clauses = [f"{c} = ?" for c, v in (("dag_id", dag_id), ("state", state)) if v]
            where = " AND ".join(clauses) or "1"
            rows = conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run WHERE {where} "
                "ORDER BY started_at DESC, dag_id, run_id LIMIT ?",
                (*(v for v in (dag_id, state) if v), limit),
            )
            return tuple(run_from_row(row) for row in rows)
        case base.GetRun(dag_id, run_id, with_attempts):
            run = conn.execute(_SQL["get_run"], (dag_id, run_id)).fetchone()
            if run is None:
                return None
            instances = conn.execute(_SQL["get_instances"], (dag_id, run_id)).fetchall()
            attempts = (
                conn.execute(_SQL["get_attempts"], (dag_id, run_id)).fetchall()
                if with_attempts
                else []
            )
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
    conn.executemany(_SQL["abandon_running"], keys)
    if not op.keep_task_state:
        conn.executemany(_SQL["clear_state"], keys)
    if cleared:
        conn.execute(_SQL["queue_run"], run)
    return cleared
