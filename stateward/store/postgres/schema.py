"""The PostgreSQL schema, its version table, and the migrations between versions.

Every table lives in one PostgreSQL schema (``stateward`` unless the store is given
another), so a database shared with other applications never sees a name clash and a
stateward schema is recognised by its ``schema_version`` table. A schema that holds
tables but no ``schema_version`` belongs to someone else and is never modified.

Version numbers mean the same logical schema as the SQLite store's
(:mod:`stateward.store.sqlite.schema`): 1 is task state, 2 adds provenance, assets, aliases
and events (up to 7; a later step may change one store's layout only). The PostgreSQL
tables differ in three ways: text columns that identify rows use the ``"C"`` collation
(byte order, as SQLite and Python sort), each value has a ``value_digest``, the SHA-256
of its canonical JSON, so compare-and-set is one conditional statement (see
:func:`stateward.store.postgres.value_digest`), and each state row may carry the number
of its newest version (8, see :func:`scoped_statements`).

Migrations run in one transaction holding an advisory lock keyed by the schema's name,
and re-read the version under it, so runtimes opening one new database at once migrate
it once.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import attrs

from ..._errors import NotAStatewardDatabaseError
from ..._values import MAX_INT_DIGITS

#: The schema a store uses unless told otherwise.
DEFAULT_SCHEMA: Final = "stateward"
#: The first key of the migration advisory lock: 'SWD1' as an int, as SQLite's mark.
LOCK_CLASS: Final = 0x53574431

_IDENTIFIER: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LIVE: Final = "(expires_at IS NULL OR expires_at > {now})"
#: A JSON int as Python writes it (a float always has '.' or 'e').
_INT_TEXT: Final = "'^-?[0-9]+$'"

#: Issue 16, self-contained so that it can take whatever number comes next. Mapped
#: state follows its item: task state is keyed by the item (``''`` unmapped, ``'#3'``
#: by position, else the item's fingerprint) instead of the map index, which stays as
#: the index of the instance that last wrote; rows written before were kept by
#: position. ``task_item`` records where each item stood in the latest expansion.
#: History: every change of a key adds a version; a NULL value is a tombstone.
HISTORY_MIGRATION: Final = (
    'ALTER TABLE {s}.task_state ADD COLUMN item text COLLATE "C"',
    "UPDATE {s}.task_state SET item = CASE WHEN map_index < 0 THEN '' ELSE '#' || map_index END",
    "ALTER TABLE {s}.task_state ALTER COLUMN item SET NOT NULL, "
    "DROP CONSTRAINT task_state_pkey, ADD PRIMARY KEY (dag_id, run_id, task_id, item, key)",
    """CREATE TABLE {s}.task_item (
        dag_id text COLLATE "C" NOT NULL,
        run_id text COLLATE "C" NOT NULL,
        task_id text COLLATE "C" NOT NULL,
        item text COLLATE "C" NOT NULL,
        map_index integer NOT NULL,
        label text,
        seq bigint NOT NULL,
        PRIMARY KEY (dag_id, run_id, task_id, item)
    )""",
    "CREATE INDEX task_item_position ON {s}.task_item (dag_id, run_id, task_id, map_index, seq)",
    # The next seq of a task (MAX over its items) without visiting every item.
    "CREATE INDEX task_item_seq ON {s}.task_item (dag_id, run_id, task_id, seq)",
    """CREATE TABLE {s}.task_state_history (
        dag_id text COLLATE "C" NOT NULL,
        run_id text COLLATE "C" NOT NULL,
        task_id text COLLATE "C" NOT NULL,
        item text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        version integer NOT NULL,
        value text,
        updated_at double precision NOT NULL,
        updated_by text NOT NULL,
        PRIMARY KEY (dag_id, run_id, task_id, item, key, version)
    )""",
    """CREATE TABLE {s}.asset_state_history (
        asset_id bigint NOT NULL REFERENCES {s}.asset (id),
        key text COLLATE "C" NOT NULL,
        version integer NOT NULL,
        value text,
        updated_at double precision NOT NULL,
        updated_by text NOT NULL,
        PRIMARY KEY (asset_id, key, version)
    )""",
)

#: Each migration: (version it brings the schema to, its statements). ``{s}`` is the
#: quoted schema name.
MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            "CREATE SCHEMA IF NOT EXISTS {s}",
            """CREATE TABLE {s}.schema_version (
                version integer PRIMARY KEY,
                applied_at double precision NOT NULL
            )""",
            """CREATE TABLE {s}.task_state (
                dag_id text COLLATE "C" NOT NULL,
                run_id text COLLATE "C" NOT NULL,
                task_id text COLLATE "C" NOT NULL,
                map_index integer NOT NULL,
                key text COLLATE "C" NOT NULL,
                value text NOT NULL,
                value_digest bytea NOT NULL,
                updated_at double precision NOT NULL,
                expires_at double precision,
                PRIMARY KEY (dag_id, run_id, task_id, map_index, key)
            )""",
            "CREATE INDEX task_state_expiry ON {s}.task_state (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ),
    ),
    (
        2,
        (
            # Provenance of task state: which try wrote it (NULL: out-of-band).
            "ALTER TABLE {s}.task_state ADD COLUMN writer_try integer",
            """CREATE TABLE {s}.asset (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                name text COLLATE "C" NOT NULL UNIQUE,
                uri text COLLATE "C" NOT NULL UNIQUE,
                created_at double precision NOT NULL
            )""",
            """CREATE TABLE {s}.asset_state (
                asset_id bigint NOT NULL REFERENCES {s}.asset (id),
                key text COLLATE "C" NOT NULL,
                value text NOT NULL,
                value_digest bytea NOT NULL,
                updated_at double precision NOT NULL,
                expires_at double precision,
                writer_dag_id text,
                writer_run_id text,
                writer_task_id text,
                writer_map_index integer,
                writer_try integer,
                PRIMARY KEY (asset_id, key)
            )""",
            "CREATE INDEX asset_state_expiry ON {s}.asset_state (expires_at) "
            "WHERE expires_at IS NOT NULL",
            # seq keeps the order mappings were made in ("oldest first"), across
            # runtimes and within one batch, where created_at is the same.
            """CREATE TABLE {s}.asset_alias (
                alias_name text COLLATE "C" NOT NULL,
                asset_id bigint NOT NULL REFERENCES {s}.asset (id),
                created_at double precision NOT NULL,
                seq bigint GENERATED ALWAYS AS IDENTITY,
                PRIMARY KEY (alias_name, asset_id)
            )""",
            """CREATE TABLE {s}.asset_event (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                asset_id bigint NOT NULL REFERENCES {s}.asset (id),
                alias_name text,
                extra text NOT NULL,
                dag_id text,
                run_id text,
                task_id text,
                map_index integer,
                try_number integer,
                timestamp double precision NOT NULL
            )""",
        ),
    ),
    (
        3,
        (
            # An asset referenced by name only (or URI only) binds no URI (name) until
            # a declaration gives one.
            "ALTER TABLE {s}.asset ALTER COLUMN name DROP NOT NULL, "
            "ALTER COLUMN uri DROP NOT NULL, "
            "ADD CONSTRAINT asset_named CHECK (name IS NOT NULL OR uri IS NOT NULL)",
        ),
    ),
    (
        4,
        (
            # Run records: runs, task instances and attempts (written as they happen).
            """CREATE TABLE {s}.dag_run (
                dag_id text COLLATE "C" NOT NULL,
                run_id text COLLATE "C" NOT NULL,
                state text NOT NULL,
                started_at double precision NOT NULL,
                ended_at double precision,
                PRIMARY KEY (dag_id, run_id)
            )""",
            "CREATE INDEX dag_run_started ON {s}.dag_run (started_at)",
            """CREATE TABLE {s}.task_instance (
                dag_id text COLLATE "C" NOT NULL,
                run_id text COLLATE "C" NOT NULL,
                task_id text COLLATE "C" NOT NULL,
                map_index integer NOT NULL,
                state text NOT NULL,
                try_number integer NOT NULL,
                started_at double precision,
                ended_at double precision,
                PRIMARY KEY (dag_id, run_id, task_id, map_index)
            )""",
            """CREATE TABLE {s}.task_attempt (
                dag_id text COLLATE "C" NOT NULL,
                run_id text COLLATE "C" NOT NULL,
                task_id text COLLATE "C" NOT NULL,
                map_index integer NOT NULL,
                try_number integer NOT NULL,
                state text NOT NULL,
                started_at double precision NOT NULL,
                ended_at double precision,
                error_type text,
                error_message text,
                error_traceback text,
                rendered text NOT NULL,
                result text,
                result_is_json boolean NOT NULL,
                host text,
                pid integer,
                log text,
                PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number)
            )""",
        ),
    ),
    (5, HISTORY_MIGRATION),
    (
        6,
        (
            # Leases (as SQLite's version 6); the expiry is on the server's clock.
            'ALTER TABLE {s}.task_instance ADD COLUMN lease_holder text COLLATE "C"',
            "ALTER TABLE {s}.task_instance ADD COLUMN lease_try integer",
            "ALTER TABLE {s}.task_instance ADD COLUMN lease_expires double precision",
            "CREATE INDEX task_instance_lease ON {s}.task_instance (lease_holder) "
            "WHERE lease_holder IS NOT NULL",
        ),
    ),
    (
        7,
        (
            # As SQLite's version 7: the run's graph, and events by asset.
            "ALTER TABLE {s}.dag_run ADD COLUMN graph text",
            "CREATE INDEX asset_event_asset ON {s}.asset_event (asset_id, id)",
        ),
    ),
    (
        8,
        (
            # A state row carries the number of the version it is, while every writer
            # since it was set has kept it (NULL: not known, read the history): a put
            # numbers its version from the row it updates, reading nothing. Layout only:
            # the logical schema is SQLite's version 7.
            "ALTER TABLE {s}.task_state ADD COLUMN version integer",
            "ALTER TABLE {s}.asset_state ADD COLUMN version integer",
        ),
    ),
)

#: The version this code writes.
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case PostgreSQL identifier.

    Raises:
        ValueError: it is not (it is spliced into SQL, so nothing else is accepted).
    """
    if not isinstance(schema, str) or not _IDENTIFIER.match(schema):
        msg = (
            f"schema must be a lower-case PostgreSQL identifier (letters, digits, '_', "
            f"at most 63 characters, not starting with a digit), got {schema!r}"
        )
        raise ValueError(msg)
    return schema


def quoted(schema: str) -> str:
    """The schema name as it appears in SQL."""
    return f'"{check_schema_name(schema)}"'


async def current_version(conn: Any, schema: str, where: str) -> int | None:
    """Return the schema version of a stateward schema, or ``None`` if there is none yet.

    Args:
        conn: An open asyncpg connection (asyncio side).
        schema: The PostgreSQL schema holding stateward's tables.
        where: The redacted DSN, for messages.

    Raises:
        NotAStatewardDatabaseError: the schema holds another application's tables, or
            was written by a newer stateward.
    """
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_catalog.pg_class AS c "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        schema,
    )
    tables = sorted(row[0] for row in rows)
    if not tables:
        return None
    if "schema_version" not in tables:
        shown = ", ".join(tables[:5])
        msg = (
            f"schema {schema!r} of {where} holds tables of another application "
            f"({shown}); stateward leaves it untouched. Give the store another schema "
            "(PostgresStore(dsn, schema=...)) or point --db / db= at another database"
        )
        raise NotAStatewardDatabaseError(msg)
    version: int = await conn.fetchval(f"SELECT MAX(version) FROM {quoted(schema)}.schema_version")
    version = version or 0
    if version > SCHEMA_VERSION:
        msg = (
            f"schema {schema!r} of {where} has schema version {version}, newer than this "
            f"stateward's {SCHEMA_VERSION}; upgrade stateward to open it"
        )
        raise NotAStatewardDatabaseError(msg)
    return version


async def migrate(conn: Any, schema: str, where: str, to_version: int = SCHEMA_VERSION) -> int:
    """Bring ``schema`` to ``to_version`` in one transaction; return the version it had.

    The transaction takes an advisory lock keyed by the schema name and reads the
    version again under it, so concurrent openers migrate once.
    """
    s = quoted(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, schema)
        from_version = await current_version(conn, schema, where) or 0
        for version, statements in MIGRATIONS:
            if from_version < version <= to_version:
                for statement in statements:
                    await conn.execute(statement.format(s=s))
                await conn.execute(
                    f"INSERT INTO {s}.schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    time.time(),
                )
    return from_version


# -- the store's statements -----------------------------------------------------------


def lease_held(s: str, first: int) -> str:
    """The read of a task instance's row that finds it only while its lease is the
    fenced one, parameters numbered from ``first``: the instance's four keys, the
    holder and the try. ``FOR SHARE``: a takeover (which updates the row) waits until
    the fenced write's transaction has committed, so no write of an attempt lands after
    its successor started; fenced writes do not wait for each other."""
    q = [f"${first + i}" for i in range(6)]
    return (
        f"SELECT 1 FROM {s}.task_instance WHERE dag_id = {q[0]} AND run_id = {q[1]} "
        f"AND task_id = {q[2]} AND map_index = {q[3]} AND lease_holder = {q[4]} "
        f"AND lease_try = {q[5]} FOR SHARE"
    )


def scoped_statements(
    s: str, table: str, keys: dict[str, str], writer: dict[str, str], history: str
) -> dict[str, str]:
    """The single statements on one state table, numbered for its key columns.

    ``keys`` and ``writer`` map the key columns (the scope's, then ``key``) and the
    writer columns to their types. Parameters, in order: the key columns, then for
    writes the value, its digest, now, expires_at and the writer columns; reads end
    with now. ``put_versioned`` and ``put_counted`` (a put with history on, ``history``
    the history table) add the writer's provenance and how many versions to keep. The
    ``_fenced`` forms add a lease (see :func:`lease_held`) after all those.
    """
    n, w = len(keys), len(writer)
    p = [f"${i}" for i in range(1, n + w + 7)]
    key_names = tuple(keys)
    pk = " AND ".join(f"{c} = {p[i]}" for i, c in enumerate(key_names))
    scope = " AND ".join(f"{c} = {p[i]}" for i, c in enumerate(key_names[:-1]))
    columns = ", ".join((*keys, "value", "value_digest", "updated_at", "expires_at", *writer))
    values = ", ".join(p[: n + 4 + w])
    # The same values typed, for an INSERT ... SELECT (which does not type them by the
    # columns they go to).
    types = (*keys.values(), "text", "bytea", "double precision", "double precision",
             *writer.values())  # fmt: skip
    typed = ", ".join(f"{mark}::{t}" for mark, t in zip(p[: len(types)], types, strict=True))
    now, by = p[n + 2], p[n]
    # Every write but a counted put leaves the row's version unknown (see "versioned").
    rest = ", ".join(f"{c} = excluded.{c}" for c in ("updated_at", "expires_at", *writer))
    rest += ", version = NULL"
    conflict = (
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET value = excluded.value, "
        f"value_digest = excluded.value_digest, {rest}"
    )
    upsert = f"INSERT INTO {table} AS t ({columns}) VALUES ({values}) {conflict}"
    # A fenced put alone in a batch, in one statement (one transaction): the lease's row
    # is read and locked first, and the row is written only if it was found. The
    # answer is whether it was.
    fence = f"l AS MATERIALIZED ({lease_held(s, n + w + 5)})"
    put_fenced = (
        f"WITH {fence}, w AS (INSERT INTO {table} AS t ({columns}) SELECT {typed} "
        f"WHERE EXISTS (SELECT 1 FROM l) {conflict}) SELECT EXISTS (SELECT 1 FROM l)"
    )
    # An increment: $by is the amount; the row is added to while live and an int whose
    # sum keeps within MAX_INT_DIGITS digits, replaced when expired, and left alone
    # (locked, nothing returned) otherwise. CASE: the cast only once the text is an int.
    t_live = "(t.expires_at IS NULL OR t.expires_at > {now})"
    inc_now = p[n + 1]
    added = (
        f"CASE WHEN {t_live.format(now=inc_now)} THEN (t.value::numeric + {by}::numeric)::text "
        "ELSE excluded.value END"
    )
    inc_values = ", ".join(
        (*p[:n], f"{by}::numeric::text", f"sha256(convert_to({by}::numeric::text, 'UTF8'))",
         *p[n + 1 : n + 3 + w])
    )  # fmt: skip
    # A put with history on, in one statement: the row, its version, the cut.
    #
    # Counted (the row carries its version): the UPDATE numbers the version from the
    # row itself, version + 1, and under READ COMMITTED an UPDATE that waited for the
    # row's lock evaluates that on the newest row, so the number is right whatever
    # committed meanwhile; nothing is read but the row. A row whose version is not
    # known (NULL: the last writer was not a counted put), or no row, changes nothing.
    #
    # Versioned (any row, or none): the version is the newest kept plus one, read from
    # this statement's snapshot, so the row is written only if the snapshot still
    # holds: an existing row is changed only if it is still the version that snapshot
    # saw (its xmin, read again on the newest row once its lock is had), and a row the
    # snapshot did not see is inserted only if no other transaction has inserted it
    # since (ON CONFLICT DO NOTHING waits for one inserting it). A row another
    # transaction changed, deleted or inserted since changes nothing, and the caller
    # runs the put as a transaction of statements (see Session._put_versioned). Either
    # way the row is left counted.
    who_p, keep_p = p[n + 4 + w], p[n + 5 + w]
    history_columns = ", ".join((*keys, "version", "value", "updated_at", "updated_by"))
    set_row = (
        f"value = {p[n]}, value_digest = {p[n + 1]}, updated_at = {now}, "
        f"expires_at = {p[n + 3]}, "
        + ", ".join(f"{c} = {p[n + 4 + i]}" for i, c in enumerate(writer))
    )
    key_params = ", ".join(p[:n])
    # The version, then the cut of those past the bound, once the row is written.
    add_version = (
        f"h AS (INSERT INTO {history} ({history_columns}) SELECT {key_params}, {{number}}, "
        f"{p[n]}, {now}, {who_p} FROM {{source}} RETURNING version), "
        f"d AS (DELETE FROM {history} WHERE {pk} "
        f"AND version <= (SELECT version FROM h) - {keep_p}::integer) "
    )

    def counted(gate: str) -> str:
        return (
            f"w AS (UPDATE {table} AS t SET {set_row}, version = t.version + 1 WHERE {pk} "
            f"AND t.version IS NOT NULL{gate} RETURNING t.version), "
            + add_version.format(number="w.version", source="w")
        )

    def versioned(gate: str) -> str:
        return (
            f"m AS (SELECT COALESCE(MAX(version), 0) + 1 AS v FROM {history} WHERE {pk}), "
            f"w AS (UPDATE {table} AS t SET {set_row}, version = (SELECT v FROM m) "
            f"WHERE {pk} AND t.xmin = (SELECT xmin FROM {table} WHERE {pk}){gate} "
            f"RETURNING 1), i AS (INSERT INTO {table} ({columns}, version) SELECT {typed}, "
            f"(SELECT v FROM m) WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {pk}){gate} "
            "ON CONFLICT DO NOTHING RETURNING 1), "
            + add_version.format(
                number="m.v",
                source="m WHERE EXISTS (SELECT 1 FROM w) OR EXISTS (SELECT 1 FROM i)",
            )
        )

    put_versioned = f"WITH {versioned('')}SELECT count(*) FROM h"
    put_counted = f"WITH {counted('')}SELECT count(*) FROM h"
    # A version of a key added after its write, then the cut: a statement of its own
    # (parameters: the key columns, the value, now, the provenance, how many to keep),
    # which reads the newest version committed when it starts, the write before it
    # holding the key's row lock.
    v = [f"${i}" for i in range(n + 1, n + 5)]
    version = (
        f"WITH v AS (INSERT INTO {history} ({history_columns}) SELECT "
        + ", ".join(f"{mark}::{t}" for mark, t in zip(p[:n], keys.values(), strict=True))
        + f", COALESCE(MAX(version), 0) + 1, {v[0]}::text, {v[1]}::double precision, "
        f"{v[2]}::text FROM {history} WHERE {pk} RETURNING version) "
        f"DELETE FROM {history} WHERE {pk} AND version <= (SELECT version FROM v) - "
        f"{v[3]}::integer"
    )
    # Fenced: the lease's row first (see put_fenced); answers (done, lease held).
    fence_versioned = f"l AS MATERIALIZED ({lease_held(s, n + w + 7)})"
    gate = " AND EXISTS (SELECT 1 FROM l)"
    answer = "SELECT (SELECT count(*) FROM h), EXISTS (SELECT 1 FROM l)"
    put_versioned_fenced = f"WITH {fence_versioned}, {versioned(gate)}{answer}"
    put_counted_fenced = f"WITH {fence_versioned}, {counted(gate)}{answer}"
    # A run of puts in a batch's transaction, in one statement over arrays of the put
    # parameters (one row per key: the caller keeps the last put of each).
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=1))
    put_set = f"INSERT INTO {table} AS t ({columns}) SELECT * FROM unnest({arrays}) {conflict}"
    # Their versions, in one statement after it (so, as "version", seeing each key's
    # newest version): parameters are arrays of the key columns, the values and the
    # provenances, in the puts' order, then now and how many to keep. The puts of one
    # key are numbered on from its newest version in their order; those the cut would
    # drop at once are not inserted, and the cut sees this statement's snapshot.
    names = ", ".join(keys)
    key_arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(keys.values(), start=1))
    same = " AND ".join(f"h.{c} = k.{c}" for c in keys)
    same_n = " AND ".join(f"h.{c} = n.{c}" for c in keys)
    version_set = (
        f"WITH k AS (SELECT * FROM unnest({key_arrays}, ${n + 1}::text[], ${n + 2}::text[]) "
        f"WITH ORDINALITY AS k({names}, value, updated_by, o)), "
        f"n AS (SELECT k.*, row_number() OVER (PARTITION BY {names} ORDER BY o) AS rn, "
        f"count(*) OVER (PARTITION BY {names}) AS cnt, (SELECT COALESCE(MAX(h.version), 0) "
        f"FROM {history} AS h WHERE {same}) AS top FROM k), "
        f"v AS (INSERT INTO {history} ({history_columns}) SELECT {names}, top + rn, value, "
        f"${n + 3}::double precision, updated_by FROM n WHERE rn > cnt - ${n + 4}::integer) "
        f"DELETE FROM {history} AS h USING n WHERE n.rn = n.cnt AND {same_n} "
        f"AND h.version <= n.top + n.cnt - ${n + 4}::integer"
    )
    return {
        "put_set": put_set,
        "version_set": version_set,
        "put_versioned": put_versioned,
        "put_versioned_fenced": put_versioned_fenced,
        "put_counted": put_counted,
        "put_counted_fenced": put_counted_fenced,
        "put_fenced": put_fenced,
        "version": version,
        "get": f"SELECT value FROM {table} WHERE {pk} AND {_LIVE.format(now=p[n])}",
        "items": (
            f"SELECT key, value FROM {table} WHERE {scope} AND {_LIVE.format(now=p[n - 1])} "
            "ORDER BY key"
        ),
        "put": upsert,
        "delete": f"DELETE FROM {table} WHERE {pk} RETURNING {_LIVE.format(now=p[n])}",
        "clear": f"DELETE FROM {table} WHERE {scope}",
        "cas_absent": (f"{upsert} WHERE NOT {t_live.format(now=now)} RETURNING true"),
        "cas": (
            f"UPDATE {table} SET value = {p[n]}, value_digest = {p[n + 1]}, updated_at = {now}, "
            f"expires_at = {p[n + 3]}, version = NULL, "
            + ", ".join(f"{c} = {p[n + 4 + i]}" for i, c in enumerate(writer))
            + f" WHERE {pk} AND value_digest = {p[n + 4 + w]} "
            f"AND {_LIVE.format(now=now)} RETURNING true"
        ),
        "increment": (
            f"INSERT INTO {table} AS t ({columns}) VALUES ({inc_values}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET value = {added}, "
            f"value_digest = sha256(convert_to({added}, 'UTF8')), {rest} "
            f"WHERE NOT {t_live.format(now=inc_now)} OR CASE WHEN t.value ~ {_INT_TEXT} "
            f"THEN abs(t.value::numeric + {by}::numeric) < 1e{MAX_INT_DIGITS} ELSE false END "
            "RETURNING value"
        ),
    }


#: The key columns of task and asset state, and their types: a put's first parameters.
TASK_KEYS: Final = dict.fromkeys(("dag_id", "run_id", "task_id", "item", "key"), "text")
ASSET_KEYS: Final = {"asset_id": "bigint", "key": "text"}


@attrs.frozen
class Statements:
    """Every statement of the store, for one schema."""

    task: dict[str, str]
    asset: dict[str, str]
    s: str

    @classmethod
    def for_schema(cls, schema: str) -> Statements:
        s = quoted(schema)
        # Task state is keyed by the item; the writer's map index is written with it.
        task = scoped_statements(
            s, f"{s}.task_state", TASK_KEYS, {"map_index": "integer", "writer_try": "integer"},
            f"{s}.task_state_history",
        )  # fmt: skip
        writer = {
            "writer_dag_id": "text", "writer_run_id": "text", "writer_task_id": "text",
            "writer_map_index": "integer", "writer_try": "integer",
        }  # fmt: skip
        asset = scoped_statements(
            s, f"{s}.asset_state", ASSET_KEYS, writer, f"{s}.asset_state_history"
        )
        return cls(task, asset, s)


def filters(
    columns: dict[str, object], now: float, include_expired: bool, prefix: str = ""
) -> tuple[str, tuple[object, ...]]:
    given = {name: value for name, value in columns.items() if value is not None}
    clauses = [f"{name} = ${i}" for i, name in enumerate(given, start=1)]
    params: tuple[object, ...] = tuple(given.values())
    if not include_expired:
        clauses.append(f"({prefix}expires_at IS NULL OR {prefix}expires_at > ${len(params) + 1})")
        params += (now,)
    return " AND ".join(clauses) or "true", params
