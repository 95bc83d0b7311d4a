"""Run records and leases in PostgreSQL: the statements of their operations, for one
schema. A lease expires by the server's clock (``clock_timestamp()``): the machines
sharing the database need not agree on the time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

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
from .schema import lease_held


def _marks(n: int) -> list[str]:
    return [f"${i}" for i in range(1, n + 1)]


class RunStatements:
    """The record operations' statements in one schema (``s``: its quoted name)."""

    def __init__(self, s: str) -> None:
        run = "dag_id = $1 AND run_id = $2"
        self.run = upsert(f"{s}.dag_run", RUN_COLUMNS, RUN_KEYS, _marks(len(RUN_COLUMNS)), RUN_KEPT)
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
        # Clearing gives up the instance's lease (its attempt, if one runs, is fenced
        # off) and records an attempt left running abandoned.
        self.clear_instance = (
            f"UPDATE {s}.task_instance SET state = '{CLEARED}', lease_holder = NULL, "
            f"lease_try = NULL, lease_expires = NULL WHERE {one}"
        )
        self.abandon_running = (
            f"UPDATE {s}.task_attempt SET state = 'abandoned' WHERE {one} AND state = 'running'"
        )
        self.clear_state = f"DELETE FROM {s}.task_state WHERE {one}"
        self.queue_run = f"UPDATE {s}.dag_run SET state = '{QUEUED}' WHERE {run}"
        ended = ", ".join(f"'{state}'" for state in ENDED_RUN_STATES)
        old = f"SELECT dag_id, run_id FROM {s}.dag_run WHERE state IN ({ended}) AND ended_at < $1"
        self.count_old = f"SELECT count(*) FROM ({old}) AS old"
        self.delete_old = [
            f"DELETE FROM {s}.{table} WHERE (dag_id, run_id) IN ({old})"
            for table in ("task_attempt", "task_instance", "dag_run")
        ]
        held = f"{one} AND lease_holder = $5 AND lease_try = $6"
        server_now = "extract(epoch FROM clock_timestamp())::double precision"
        self.holds = lease_held(s, 1)
        # Many leases in one read, each row locked as lease_held does (in one order, so
        # two such reads never wait for each other crosswise): the leases found held.
        self.holds_many = (
            "SELECT i.dag_id, i.run_id, i.task_id, i.map_index, i.lease_holder, i.lease_try "
            f"FROM {s}.task_instance AS i JOIN unnest($1::text[], $2::text[], $3::text[], "
            "$4::integer[], $5::text[], $6::integer[]) AS k(dag_id, run_id, task_id, "
            "map_index, holder, try) ON i.dag_id = k.dag_id AND i.run_id = k.run_id AND "
            "i.task_id = k.task_id AND i.map_index = k.map_index AND "
            "i.lease_holder = k.holder AND i.lease_try = k.try "
            "ORDER BY i.dag_id, i.run_id, i.task_id, i.map_index FOR SHARE OF i"
        )
        self.peek = (
            f"SELECT state, try_number, lease_holder, lease_expires, {server_now}, "
            f"{', '.join(INSTANCE_COLUMNS)} FROM {s}.task_instance WHERE {one}"
        )
        self.current = (
            f"SELECT state, try_number, lease_holder, lease_expires, {server_now}, "
            f"{', '.join(INSTANCE_COLUMNS)} FROM {s}.task_instance WHERE {one} FOR UPDATE"
        )
        self.try_lock = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))"
        marks = ", ".join(_marks(len(INSTANCE_COLUMNS)))
        n = len(INSTANCE_COLUMNS)
        self.insert_leased = (
            f"INSERT INTO {s}.task_instance ({', '.join((*INSTANCE_COLUMNS, *LEASE_COLUMNS))}) "
            f"VALUES ({marks}, ${n + 1}, 1, {server_now} + ${n + 2}) "
            "ON CONFLICT DO NOTHING RETURNING true"
        )
        # A first acquisition in one statement: read the instance; if it has no record,
        # take the acquirers' advisory lock without waiting and insert the instance
        # (leased, try 1) and its attempt. Parameters: the attempt's row, then the
        # holder, the timeout and the lock's key.
        a = len(ATTEMPT_COLUMNS)
        casts = (
            "text", "text", "text", "integer", "integer", "text", "double precision",
            "double precision", "text", "text", "text", "text", "text", "boolean", "text",
            "integer", "text",
        )  # fmt: skip
        typed = [f"${i}::{t}" for i, t in enumerate(casts, start=1)]
        attempt_updates = ", ".join(
            f"{c} = excluded.{c}" for c in ATTEMPT_COLUMNS if c not in ATTEMPT_KEYS
        )
        by_name = dict(zip(ATTEMPT_COLUMNS, typed, strict=True))
        instance_values = ", ".join(by_name[c] for c in INSTANCE_COLUMNS)
        self.acquire_first = (
            f"WITH cur AS (SELECT lease_holder, lease_expires, "
            f"{', '.join(INSTANCE_COLUMNS)} FROM {s}.task_instance WHERE dag_id = $1 "
            "AND run_id = $2 AND task_id = $3 AND map_index = $4), "
            f"locked AS (SELECT pg_try_advisory_xact_lock(hashtextextended(${a + 3}::text, 0)) "
            "AS ok WHERE NOT EXISTS (SELECT 1 FROM cur)), "
            f"ins AS (INSERT INTO {s}.task_instance "
            f"({', '.join((*INSTANCE_COLUMNS, *LEASE_COLUMNS))}) SELECT {instance_values}, "
            f"${a + 1}::text, {by_name['try_number']}, {server_now} + "
            f"${a + 2}::double precision FROM locked "
            "WHERE ok ON CONFLICT DO NOTHING RETURNING 1), "
            f"att AS (INSERT INTO {s}.task_attempt ({', '.join(ATTEMPT_COLUMNS)}) "
            f"SELECT {', '.join(typed)} FROM ins ON CONFLICT ({', '.join(ATTEMPT_KEYS)}) "
            f"DO UPDATE SET {attempt_updates} RETURNING 1) "
            f"SELECT (SELECT count(*) FROM att), cur.state, cur.try_number, cur.lease_holder, "
            f"cur.lease_expires, {server_now}, "
            f"{', '.join(f'cur.{c}' for c in INSTANCE_COLUMNS)} "
            "FROM (SELECT 1) AS one LEFT JOIN cur ON true"
        )
        self.find_unheld = (
            "SELECT k.i, t.state, t.try_number, t.lease_holder, t.lease_expires, "
            f"{server_now} FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[]) "
            "WITH ORDINALITY AS k(dag_id, run_id, task_id, map_index, i) "
            f"LEFT JOIN {s}.task_instance AS t ON t.dag_id = k.dag_id "
            "AND t.run_id = k.run_id AND t.task_id = k.task_id AND t.map_index = k.map_index"
        )
        self.last_attempt = (
            f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM {s}.task_attempt WHERE {one} "
            "AND try_number = $5"
        )
        self.abandon = (
            f"UPDATE {s}.task_attempt SET state = 'abandoned' WHERE {one} "
            "AND try_number = $5 AND state = 'running'"
        )
        self.take = (
            f"UPDATE {s}.task_instance SET lease_holder = $5, lease_try = $6, "
            f"lease_expires = {server_now} + $7 WHERE {one}"
        )
        self.ended = (
            f"UPDATE {s}.task_instance SET state = $7, try_number = $6, started_at = $8, "
            "ended_at = $9, lease_holder = CASE WHEN $10 THEN NULL ELSE lease_holder END, "
            "lease_try = CASE WHEN $10 THEN NULL ELSE lease_try END, "
            "lease_expires = CASE WHEN $10 THEN NULL ELSE lease_expires END "
            f"WHERE {held}"
        )
        self.renew = (
            f"UPDATE {s}.task_instance SET lease_expires = {server_now} + $2 "
            "WHERE lease_holder = $1 RETURNING dag_id, run_id, task_id, map_index, lease_try"
        )
        task = "dag_id = $1 AND run_id = $2 AND task_id = $3"
        # An expansion's items, each with the task's next seq (n: its place in the
        # list; an item listed twice is given once, where it is last).
        self.items = (
            f"INSERT INTO {s}.task_item (dag_id, run_id, task_id, item, map_index, label, seq) "
            f"SELECT $1, $2, $3, u.item, u.map_index, u.label, (SELECT COALESCE(MAX(seq), 0) "
            f"FROM {s}.task_item WHERE {task}) + u.n FROM unnest($4::integer[], $5::text[], "
            "$6::text[], $7::integer[]) AS u(map_index, item, label, n) "
            "ON CONFLICT (dag_id, run_id, task_id, item) DO UPDATE SET "
            "map_index = excluded.map_index, label = excluded.label, seq = excluded.seq"
        )
        self.positional = " UNION ALL ".join(
            f"(SELECT 1 FROM {s}.{table} WHERE {task} AND item LIKE '#%' LIMIT 1)"
            for table in ("task_state", "task_state_history")
        )
        # A state row adopted by another item is not counted (see schema.scoped_statements):
        # that item's history may stay where it is.
        self.adopt = [
            f"UPDATE {s}.{table} SET item = $4{more} WHERE {task} AND item = $5 AND NOT EXISTS "
            f"(SELECT 1 FROM {s}.{table} WHERE {task} AND item = $4)"
            for table, more in (("task_state", ", version = NULL"), ("task_state_history", ""))
        ]
        self.release = (
            f"UPDATE {s}.task_instance SET lease_holder = NULL, lease_try = NULL, "
            "lease_expires = NULL WHERE lease_holder = $1"
        )
        self.release_given = (
            f"UPDATE {s}.task_instance AS i SET lease_holder = NULL, lease_try = NULL, "
            "lease_expires = NULL FROM unnest($2::text[], $3::text[], $4::text[], "
            "$5::integer[], $6::integer[]) AS k(dag_id, run_id, task_id, map_index, try) "
            "WHERE i.dag_id = k.dag_id AND i.run_id = k.run_id AND i.task_id = k.task_id "
            "AND i.map_index = k.map_index AND i.lease_holder = $1 AND i.lease_try = k.try"
        )

    async def holds_lease(self, conn: Any, lease: Lease) -> bool:
        """Whether the instance's lease is ``lease``; locks the row until commit."""
        found = await conn.fetchval(self.holds, *lease.instance, lease.holder, lease.try_number)
        return found is not None

    async def held_leases(self, conn: Any, leases: Sequence[Lease]) -> set[Lease]:
        """Which of ``leases`` their instances hold, in one statement (round trip);
        locks the rows of those until commit."""
        if len(leases) == 1:
            return set(leases) if await self.holds_lease(conn, leases[0]) else set()
        columns = list(zip(*(attrs.astuple(lease) for lease in leases), strict=True))
        rows = await conn.fetch(self.holds_many, *columns)
        return {Lease(*row) for row in rows}

    async def _acquire(self, conn: Any, op: base.AcquireLease) -> LeaseAnswer:
        key = (op.dag_id, op.run_id, op.task_id, op.map_index)
        # One statement for the common cases: an instance with no record is inserted
        # leased (under the acquirers' advisory lock, taken without waiting: waiting,
        # on the lock or on a row another runtime's batch is inserting, could chain
        # into a deadlock between batches, which PostgreSQL detects only after
        # deadlock_timeout while no lease of either runtime is renewed); one with a
        # record is read without a lock, and most of those are held or finished.
        first = op.first_try
        _, attempt = acquired_rows(op, first)
        lock_key = "\x1f".join(map(str, key))
        peeked = await conn.fetchrow(self.acquire_first, *attempt, op.holder, op.timeout, lock_key)
        if peeked[0]:
            return base.lease_answer("acquired", first, None, None)
        if peeked[1] is None:
            # No record, and another acquirer holds the lock or just inserted it.
            return base.lease_answer("held", 0, None, None)
        state, try_number, holder, expires, now = peeked[1:6]
        outcome, _ = base.decide_lease(op, (state, try_number, holder, expires), now)
        if outcome == "held":
            return base.lease_answer(outcome, try_number, holder, expires)
        if outcome == "finished":
            return await self._finished(conn, key, try_number, tuple(peeked[6:]))
        # A takeover or a next try: serialised by the same lock, then decided again
        # under the row's lock.
        if not await conn.fetchval(self.try_lock, lock_key):
            return base.lease_answer("held", 0, None, None)
        found = await conn.fetchrow(self.current, *key)
        state, try_number, holder, expires, now = found[:5]
        outcome, new_try = base.decide_lease(op, (state, try_number, holder, expires), now)
        if outcome == "finished":
            return await self._finished(conn, key, new_try, tuple(found[5:]))
        if outcome == "held":
            return base.lease_answer(outcome, new_try, holder, expires)
        if state == "running":
            await conn.execute(self.abandon, *key, try_number)
        instance, attempt = acquired_rows(op, new_try)
        await conn.execute(self.attempt, *attempt)
        await conn.execute(self.instance, *instance)
        await conn.execute(self.take, *key, op.holder, new_try, op.timeout)
        return base.lease_answer(outcome, new_try, None, None)

    async def _finished(
        self, conn: Any, key: tuple[Any, ...], try_number: int, row: tuple[Any, ...]
    ) -> LeaseAnswer:
        attempts = await conn.fetch(self.last_attempt, *key, try_number)
        record = instance_from_rows(row, [tuple(a) for a in attempts])
        return base.lease_answer("finished", try_number, None, None, record)

    async def _ended(self, conn: Any, op: base.RecordAttempt) -> None:
        a = op.attempt
        lease = Lease(op.dag_id, op.run_id, op.task_id, op.map_index, op.holder or "", a.try_number)
        status = await conn.execute(
            self.ended, *lease.instance, lease.holder, lease.try_number, op.instance_state,
            a.started_at, a.ended_at, op.instance_state in base.FINAL_STATES,
        )  # fmt: skip
        if status.split()[-1] == "0":
            raise base.stale_error(lease, "the record of its end")
        await conn.execute(self.attempt, *attempt_row(op))

    async def _record_items(self, conn: Any, op: base.RecordItems) -> None:
        task = (op.dag_id, op.run_id, op.task_id)
        last = {item: (i, label, n) for n, (i, item, label) in enumerate(op.places, 1)}
        if last:
            rows = [(i, item, label, n) for item, (i, label, n) in last.items()]
            await conn.execute(self.items, *task, *(list(c) for c in zip(*rows, strict=True)))
        if await conn.fetchval(self.positional, *task) is None:
            return
        for map_index, item, _ in op.places:
            position = base.position_item(map_index)
            if item != position:
                for sql in self.adopt:
                    await conn.execute(sql, *task, item, position)

    async def apply(self, conn: Any, op: base.Op) -> Any:
        """Execute one run-record or lease operation (see :mod:`stateward.store.base`)."""
        match op:
            case base.RecordItems():
                await self._record_items(conn, op)
            case base.RecordRun():
                await conn.execute(self.run, *run_row(op))
            case base.EndRun(dag_id, run_id):
                rows = await conn.fetch(self.instance_states, dag_id, run_id)
                record = op.record({(task_id, i): state for task_id, i, state in rows})
                await conn.execute(self.run, *run_row(record))
                return record.state
            case base.RecordInstance():
                await conn.execute(self.instance, *instance_row(op))
            case base.RecordAttempt(holder=None):
                await conn.execute(self.attempt, *attempt_row(op))
                await conn.execute(self.instance, *instance_row_of_attempt(op))
            case base.RecordAttempt():
                await self._ended(conn, op)
            case base.AcquireLease():
                return await self._acquire(conn, op)
            case base.FindUnheld(holder, instances):
                columns = [list(column) for column in zip(*instances, strict=True)]
                rows = await conn.fetch(self.find_unheld, *columns[:4]) if instances else []
                unheld = []
                for i, state, try_number, lease_holder, expires, now in rows:
                    current = None if state is None else (state, try_number, lease_holder, expires)
                    probe = base.LeaseProbe(holder, instances[i - 1][4])
                    if base.decide_lease(probe, current, now)[0] != "held":
                        unheld.append(i - 1)
                return tuple(sorted(unheld))
            case base.RenewLeases(holder, timeout):
                rows = await conn.fetch(self.renew, holder, timeout)
                return tuple(tuple(row) for row in rows)
            case base.ReleaseLeases(holder, leases):
                if leases is None:
                    status = await conn.execute(self.release, holder)
                elif leases:
                    columns = [list(c) for c in zip(*leases, strict=True)]
                    status = await conn.execute(self.release_given, holder, *columns)
                else:
                    return 0
                return int(status.split()[-1])
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
            case base.GetRun(dag_id, run_id, with_attempts):
                run = await conn.fetchrow(self.get_run, dag_id, run_id)
                if run is None:
                    return None
                instances = await conn.fetch(self.get_instances, dag_id, run_id)
                attempts = (
                    await conn.fetch(self.get_attempts, dag_id, run_id) if with_attempts else []
                )
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
            await conn.executemany(self.abandon_running, keys)
            if not op.keep_task_state:
                await conn.executemany(self.clear_state, keys)
            await conn.execute(self.queue_run, op.dag_id, op.run_id)
        return cleared
