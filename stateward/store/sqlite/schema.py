"""The SQLite schema, its version table, and the migrations between versions.

A stateward database is marked twice: ``PRAGMA application_id`` holds
:data:`APPLICATION_ID`, and the ``schema_version`` table has one row per migration
applied. A file without the mark that already holds tables belongs to someone else and
is never modified.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Final

from ..._errors import NotAStatewardDatabaseError

#: 'SWD1' as an int: what ``PRAGMA application_id`` holds in a stateward database.
APPLICATION_ID: Final = 0x53574431

#: Issue 16, self-contained so that it can take whatever number comes next.
#: Mapped state follows its item: task state is keyed by the item (``''`` unmapped,
#: ``'#3'`` by position, else the item's fingerprint) instead of the map index, which
#: stays as the index of the instance that last wrote. SQLite cannot change a primary
#: key in place, so ``task_state`` is copied; rows written before were kept by position.
#: ``task_item`` records where each item stood in the latest expansion (``seq`` orders
#: the records of one task). History: every change of a key adds a version; a NULL
#: value is a tombstone. A key's versions are a ring of ``history`` slots (a new
#: version overwrites the oldest in place: one B-tree leaf per commit), ``slot`` being
#: the version modulo ``history``, or minus the version when that slot still holds a
#: version to keep (the setting was raised).
HISTORY_MIGRATION: Final = (
    """CREATE TABLE task_state_v5 (
        dag_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        item TEXT NOT NULL,
        key TEXT NOT NULL,
        map_index INTEGER NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        writer_try INTEGER,
        PRIMARY KEY (dag_id, run_id, task_id, item, key)
    ) WITHOUT ROWID""",
    "INSERT INTO task_state_v5 SELECT dag_id, run_id, task_id, "
    "CASE WHEN map_index < 0 THEN '' ELSE '#' || map_index END, key, map_index, value, "
    "updated_at, expires_at, writer_try FROM task_state",
    "DROP TABLE task_state",
    "ALTER TABLE task_state_v5 RENAME TO task_state",
    "CREATE INDEX task_state_expiry ON task_state (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE task_item (
        dag_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        item TEXT NOT NULL,
        map_index INTEGER NOT NULL,
        label TEXT,
        seq INTEGER NOT NULL,
        PRIMARY KEY (dag_id, run_id, task_id, item)
    ) WITHOUT ROWID""",
    "CREATE INDEX task_item_position ON task_item (dag_id, run_id, task_id, map_index, seq)",
    # The next seq of a task (MAX over its items) without visiting every item.
    "CREATE INDEX task_item_seq ON task_item (dag_id, run_id, task_id, seq)",
    """CREATE TABLE task_state_history (
        dag_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        item TEXT NOT NULL,
        key TEXT NOT NULL,
        slot INTEGER NOT NULL,
        version INTEGER NOT NULL,
        value TEXT,
        updated_at REAL NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (dag_id, run_id, task_id, item, key, slot)
    ) WITHOUT ROWID""",
    """CREATE TABLE asset_state_history (
        asset_id INTEGER NOT NULL REFERENCES asset (id),
        key TEXT NOT NULL,
        slot INTEGER NOT NULL,
        version INTEGER NOT NULL,
        value TEXT,
        updated_at REAL NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (asset_id, key, slot)
    ) WITHOUT ROWID""",
)

#: Each migration: (version it brings the database to, its statements).
MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE schema_version (
                version INTEGER PRIMARY KEY,
                applied_at REAL NOT NULL
            )""",
            """CREATE TABLE task_state (
                dag_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                map_index INTEGER NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                updated_at REAL NOT NULL,
                expires_at REAL,
                PRIMARY KEY (dag_id, run_id, task_id, map_index, key)
            ) WITHOUT ROWID""",
            "CREATE INDEX task_state_expiry ON task_state (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ),
    ),
    (
        2,
        (
            # Provenance of task state: which try wrote it (NULL: out-of-band).
            "ALTER TABLE task_state ADD COLUMN writer_try INTEGER",
            """CREATE TABLE asset (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                uri TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL
            )""",
            """CREATE TABLE asset_state (
                asset_id INTEGER NOT NULL REFERENCES asset (id),
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                updated_at REAL NOT NULL,
                expires_at REAL,
                writer_dag_id TEXT,
                writer_run_id TEXT,
                writer_task_id TEXT,
                writer_map_index INTEGER,
                writer_try INTEGER,
                PRIMARY KEY (asset_id, key)
            ) WITHOUT ROWID""",
            "CREATE INDEX asset_state_expiry ON asset_state (expires_at) "
            "WHERE expires_at IS NOT NULL",
            """CREATE TABLE asset_alias (
                alias_name TEXT NOT NULL,
                asset_id INTEGER NOT NULL REFERENCES asset (id),
                created_at REAL NOT NULL,
                PRIMARY KEY (alias_name, asset_id)
            )""",
            """CREATE TABLE asset_event (
                id INTEGER PRIMARY KEY,
                asset_id INTEGER NOT NULL REFERENCES asset (id),
                alias_name TEXT,
                extra TEXT NOT NULL,
                dag_id TEXT,
                run_id TEXT,
                task_id TEXT,
                map_index INTEGER,
                try_number INTEGER,
                timestamp REAL NOT NULL
            )""",
        ),
    ),
    (
        3,
        (
            # An asset referenced by name only (or URI only) binds no URI (name) until
            # a declaration gives one: the other column may be NULL. SQLite cannot drop
            # NOT NULL in place, so the table is copied (ids kept; foreign keys are off).
            """CREATE TABLE asset_v3 (
                id INTEGER PRIMARY KEY,
                name TEXT UNIQUE,
                uri TEXT UNIQUE,
                created_at REAL NOT NULL,
                CHECK (name IS NOT NULL OR uri IS NOT NULL)
            )""",
            "INSERT INTO asset_v3 (id, name, uri, created_at) "
            "SELECT id, name, uri, created_at FROM asset",
            "DROP TABLE asset",
            "ALTER TABLE asset_v3 RENAME TO asset",
        ),
    ),
    (
        4,
        (
            # Run records: runs, task instances and attempts (written as they happen).
            """CREATE TABLE dag_run (
                dag_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                state TEXT NOT NULL,
                started_at REAL NOT NULL,
                ended_at REAL,
                PRIMARY KEY (dag_id, run_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX dag_run_started ON dag_run (started_at)",
            """CREATE TABLE task_instance (
                dag_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                map_index INTEGER NOT NULL,
                state TEXT NOT NULL,
                try_number INTEGER NOT NULL,
                started_at REAL,
                ended_at REAL,
                PRIMARY KEY (dag_id, run_id, task_id, map_index)
            ) WITHOUT ROWID""",
            """CREATE TABLE task_attempt (
                dag_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                map_index INTEGER NOT NULL,
                try_number INTEGER NOT NULL,
                state TEXT NOT NULL,
                started_at REAL NOT NULL,
                ended_at REAL,
                error_type TEXT,
                error_message TEXT,
                error_traceback TEXT,
                rendered TEXT NOT NULL,
                result TEXT,
                result_is_json INTEGER NOT NULL,
                host TEXT,
                pid INTEGER,
                log TEXT,
                PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number)
            )""",
        ),
    ),
    (5, HISTORY_MIGRATION),
    (
        6,
        (
            # Leases: the runtime whose attempt holds the instance, that attempt's try,
            # and when the lease expires unless renewed (see DESIGN.md, leases).
            "ALTER TABLE task_instance ADD COLUMN lease_holder TEXT",
            "ALTER TABLE task_instance ADD COLUMN lease_try INTEGER",
            "ALTER TABLE task_instance ADD COLUMN lease_expires REAL",
            "CREATE INDEX task_instance_lease ON task_instance (lease_holder) "
            "WHERE lease_holder IS NOT NULL",
        ),
    ),
    (
        7,
        (
            # The Dag's graph with its run (JSON; NULL for runs recorded before), and
            # an asset's events read back newest first by asset.
            "ALTER TABLE dag_run ADD COLUMN graph TEXT",
            "CREATE INDEX asset_event_asset ON asset_event (asset_id, id)",
        ),
    ),
)

#: The version this code writes.
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def is_locked(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite's "busy"/"locked": another connection holds a lock."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _read_mark(conn: sqlite3.Connection) -> tuple[int, list[str]]:
    """The file's application id and table names, read from one snapshot.

    Read as two autocommit statements, another process's first migration could commit
    between them: the id read before it (0) and the tables after, which looks exactly
    like a foreign database. Inside one read transaction both come from one snapshot.
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    except BaseException:
        if own:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
    return app_id, tables


def current_version(conn: sqlite3.Connection, path: str) -> int | None:
    """Return the schema version of a stateward database, or ``None`` for an empty file.

    Raises:
        NotAStatewardDatabaseError: the file is not SQLite, belongs to another
            application, or was written by a newer stateward.
    """
    try:
        app_id, tables = _read_mark(conn)
    except sqlite3.DatabaseError as exc:
        if is_locked(exc):  # another process is writing the file: not a verdict on it
            raise
        msg = (
            f"{path!r} is not a stateward database ({exc}); "
            "point --db / db= at a new file or an existing stateward database"
        )
        if "malformed" in str(exc):  # an SQLite file, damaged (e.g. truncated by a copy)
            msg = (
                f"{path!r} is a damaged SQLite database ({exc}); stateward leaves it "
                "untouched. Restore it from a backup, or point --db / db= at a new file"
            )
        raise NotAStatewardDatabaseError(msg) from exc
    if app_id == 0 and not tables:
        return None
    if app_id != APPLICATION_ID or "schema_version" not in tables:
        shown = ", ".join(sorted(tables)[:5]) or "none"
        msg = (
            f"{path!r} is an SQLite database of another application "
            f"(application_id {app_id:#x}, tables: {shown}); stateward leaves it untouched. "
            "Point --db / db= at a new file or an existing stateward database"
        )
        raise NotAStatewardDatabaseError(msg)
    version: int = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
    if version > SCHEMA_VERSION:
        msg = (
            f"{path!r} has schema version {version}, newer than this stateward's "
            f"{SCHEMA_VERSION}; upgrade stateward to open it"
        )
        raise NotAStatewardDatabaseError(msg)
    return version


def migrate(conn: sqlite3.Connection, path: str, to_version: int = SCHEMA_VERSION) -> int:
    """Bring the database to ``to_version`` in one transaction; return the version it had.

    The version is read again under the write lock, so several processes opening one
    new file at once migrate it once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        from_version = current_version(conn, path) or 0
        if from_version == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for version, statements in MIGRATIONS:
            if from_version < version <= to_version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return from_version
