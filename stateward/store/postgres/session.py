"""The asyncio side of the PostgreSQL store: one asyncpg connection and the SQL on it.

:class:`Session` runs inside the store's trio-asyncio loop; the store
(:mod:`stateward.store.postgres`) calls :meth:`Session.run` once per batch, so a batch
crosses between trio and asyncio once, whatever its number of statements.

Every operation that writes is one statement, correct with many runtimes writing at
once: a put is an upsert, an increment an upsert that adds in SQL (refusing a value
that is not an int), a compare-and-set one conditional statement, and expiry is
compared in SQL. A batch that writes is one transaction (READ COMMITTED: each
statement sees the rows committed before it and waits for rows another transaction
is writing); a batch of one single-statement operation runs without BEGIN/COMMIT,
which is the same one transaction in a third of the round trips. A fenced put alone is
one statement too, its lease checked (and its row locked) in it. In a batch, the
leases of its fenced operations are read in one statement, and consecutive puts (what
group commit gathers) are one statement for their rows and one for their versions,
over arrays. A batch that only reads and
has several operations reads one snapshot (REPEATABLE READ, READ ONLY). A batch the
server rolled back for a deadlock or a serialization failure runs again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import select
import time
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
import attrs

from ..._errors import AssetConflictError, StateTypeError, StateValueError, StoreError
from ..._records import AssetInfo, ItemPlace, Lease, StateEntry, StateWriter, writer_json
from ..._values import (
    canonical_json,
    check_int_digits,
    decode_listed,
    decode_stored,
    int_digits_message,
)
from .. import base
from ..conflicts import KnownAsset, increment_type_message, resolve_declaration
from .runs import RunStatements
from .schema import (
    ASSET_KEYS,
    SCHEMA_VERSION,
    TASK_KEYS,
    Statements,
    current_version,
    filters,
    migrate,
)

#: SQLSTATEs after which the server has rolled the batch back whole: safe to run again.
_TRANSIENT: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_ATTEMPTS: Final = 5
#: A JSON int as Python writes it (as the increment statement tests it).
_INT_TEXT: Final = re.compile(r"-?[0-9]+")
#: Operations that are one statement: alone in a batch, they need no BEGIN/COMMIT.
_ONE_STATEMENT: Final = (
    base.Get,
    base.Items,
    base.Put,
    base.Delete,
    base.Clear,
    base.Increment,
    base.CompareAndSet,
    base.LookupAsset,
)
#: After a failed connection attempt, the next waits this long, doubled after each
#: failure up to _MAX_BACKOFF; a batch that comes meanwhile waits until then.
_FIRST_BACKOFF: Final = 0.1
_MAX_BACKOFF: Final = 1.0
#: At most this many keys are remembered as counted (see Session._put_versioned).
_COUNTED_KEYS: Final = 65_536


def value_digest(value: Any) -> bytes:
    """SHA-256 of the canonical JSON of a (decoded) JSON value.

    Two values have one digest exactly when :func:`stateward._values.json_equal` holds
    (see :func:`stateward._values.canonical_json`).
    """
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogatepass")).digest()


def text_digest(text: str) -> bytes:
    """:func:`value_digest` of the value whose JSON is ``text``."""
    return value_digest(json.loads(text))


class NotConnected(Exception):
    """No connection for a batch, so nothing of it was sent.

    Args:
        cause: Why the last connection attempt failed.
        retry_in: Seconds until the next batch tries to connect again.
    """

    def __init__(self, cause: Exception, retry_in: float) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry_in = retry_in


def _readable(conn: Any) -> bool:
    """Whether the connection's socket has something to read (at once, without waiting)."""
    transport = getattr(conn, "_transport", None)  # asyncpg keeps it private
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or not hasattr(select, "poll"):
        return False
    fd = sock.fileno()
    if fd < 0:  # closed under it: a ping will tell
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _NeedsTransaction(Exception):
    """Raised by an operation run without BEGIN that turns out to need a transaction."""


@functools.cache
def _looked_into(cls: type) -> tuple[str, ...]:
    # The fields of an attrs class that may hold a name or key; a decoded value
    # (CompareAndSet.expected) is compared by digest, never stored.
    return tuple(field.name for field in attrs.fields(cls) if field.name != "expected")


#: Parts that recur from operation to operation (a task's scope, its writer, its lease):
#: each looked into once (see _part_nul).
_PARTS: Final = (base.TaskScope, base.AssetScope, base.Writer, StateWriter, Lease)


def _find_nul(value: Any, *, whole: bool = False) -> str | None:
    # The first str field of an operation (its scope, writer, assets included) holding
    # a NUL; ``whole``: look into a part even if it is one of _PARTS.
    if isinstance(value, str):
        return value if "\x00" in value else None
    if type(value) is base.Fenced:
        return _part_nul(value.lease) or _find_nul(value.op)
    if type(value) is base.Put:  # the most frequent, looked into without walking
        for text in (value.key, value.value):
            if "\x00" in text:
                return text
        for part in (value.scope, value.writer, value.who):
            found = None if part is None else _part_nul(part)
            if found is not None:
                return found
        return None
    if isinstance(value, tuple):
        items: Any = value
    elif not whole and isinstance(value, _PARTS):
        return _part_nul(value)
    elif attrs.has(cls := type(value)):
        items = (getattr(value, name) for name in _looked_into(cls))
    else:
        return None
    for item in items:
        found = _find_nul(item)
        if found is not None:
            return found
    return None


@functools.lru_cache(maxsize=1024)
def _part_nul(part: Any) -> str | None:
    return _find_nul(part, whole=True)


def _nul_refusal(op: base.Op) -> StateValueError | None:
    # PostgreSQL text cannot hold U+0000; SQLite can. Refuse the one operation (values
    # are JSON text, where a NUL is always escaped, so only names and keys can hold one).
    text = _find_nul(op)
    if text is None:
        return None
    msg = (
        f"{text!r} contains a NUL character (\\x00), which PostgreSQL text cannot "
        "hold; remove it from the key, id or name"
    )
    return StateValueError(msg, key=getattr(op, "key", None))


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


def _who(writer: base.Writer | None) -> tuple[Any, ...]:
    if writer is None:
        return (None,) * 5
    return (writer.dag_id, writer.run_id, writer.task_id, writer.map_index, writer.try_number)


def _unfenced(op: base.Op) -> base.Op:
    return op.op if isinstance(op, base.Fenced) else op


def breaks_connection(exc: BaseException) -> bool:
    """Whether after ``exc`` the connection cannot be trusted with another batch.

    A server error (a constraint, a timeout) leaves it usable, rolled back; a lost
    connection, a shutting-down server or a confused protocol state do not.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(("08", "57P"))
    if isinstance(exc, asyncpg.DataError):  # a value the driver refused: nothing was sent
        return False
    return isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError)


#: What asyncpg raises, before writing anything, when asked for a statement while its
#: protocol is not idle.
_PROTOCOL_BUSY: Final = re.compile(r"cannot switch to state \d+; another operation \(\d+\)")


def refused_before_sending(exc: BaseException) -> bool:
    """Whether asyncpg refused to start a statement because its protocol was busy.

    Every statement of a batch is awaited before the next starts, so the protocol is
    busy only if the server sent something unasked: a FATAL as it terminates the
    backend, which the loop read while its socket's close was still on the way (so the
    connection looked open and idle). The refused statement was not sent, and no
    statement before it in the batch committed (one that commits, alone or COMMIT, is
    always a batch's last), so the batch can run again on a new connection.
    """
    return isinstance(exc, asyncpg.InternalClientError) and bool(_PROTOCOL_BUSY.match(str(exc)))


class Session:
    """One asyncpg connection (opened again if lost) and the store's operations on it.

    Attributes:
        clock: Seconds on a monotonic clock (connection backoff); replaceable in tests.

    Args:
        dsn: The DSN to connect to.
        schema: The PostgreSQL schema of stateward's tables.
        where: The redacted DSN, for messages.
        statement_timeout: The server's limit on one statement, in seconds (None: the
            server's default). The server enforces it, so a statement that waited too
            long for a lock is undone even if this client is gone.
    """

    clock = staticmethod(time.monotonic)

    def __init__(
        self, dsn: str, schema: str, where: str, statement_timeout: float | None = None
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.where = where
        self.settings = {"application_name": "stateward"}
        if statement_timeout is not None:
            self.settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
        self.sql = Statements.for_schema(schema)
        self.run_sql = RunStatements(self.sql.s)
        self.conn: Any = None
        #: Committed asset ids by "name:..."/"uri:..."; an id never changes.
        self.asset_ids: dict[str, int] = {}
        self._new_ids: dict[str, int] = {}
        self._in_tx = False
        #: The keys (a put's key parameters: five for task state, two for an asset's)
        #: whose rows this session last left counted: a hint, never trusted for a
        #: version number.
        self._counted: dict[tuple[Any, ...], None] = {}
        self.write_transactions = 0
        #: How many versions of each key to keep (the store sets it before each batch).
        self.history = base.DEFAULT_HISTORY
        #: The oid of the asset table when first connected: another one later means the
        #: schema was dropped or restored under this store.
        self._asset_table: int | None = None
        #: Connections attempted (for tests): one per batch at most, with backoff.
        self.connect_attempts = 0
        self._backoff = 0.0
        self._retry_at = 0.0

    async def connect(self) -> None:
        """Connect, and create or migrate the schema (only when first connecting).

        Raises:
            StoreError: on a later connection, the schema is gone or is not the one
                this session connected to first.
        """
        # Ids are read again on each connection: what happened while none was open
        # (a restore, say) is not known.
        self.asset_ids.clear()
        self.connect_attempts += 1
        # No asyncio timeouts: they run on trio's clock (see _Watchdog).
        conn = await asyncpg.connect(self.dsn, timeout=None, server_settings=self.settings)
        try:
            version = await current_version(conn, self.schema, self.where)
            if version is None and self._asset_table is not None:
                raise StoreError(self._replaced_message(), affects_all=True)
            if version != SCHEMA_VERSION:
                await migrate(conn, self.schema, self.where)
            await self._check_same_schema(conn)
        except BaseException:
            conn.terminate()  # at once: the server may be what failed
            raise
        self.conn = conn

    async def _check_same_schema(self, conn: Any) -> None:
        # Asset ids outlive a connection in the runtime's requests and in other
        # runtimes' caches; a schema created again numbers the assets afresh, so an id
        # could name another asset. Refuse instead of writing to it.
        table = await conn.fetchval("SELECT to_regclass($1)::oid", f"{self.sql.s}.asset")
        if self._asset_table is None:
            self._asset_table = table
        elif table != self._asset_table:
            raise StoreError(self._replaced_message(), affects_all=True)

    def _replaced_message(self) -> str:
        return (
            f"schema {self.schema!r} of {self.where} was dropped or replaced (a restore?) "
            "while this runtime was using it, so the asset ids it holds may name other "
            "assets now; nothing was written. Stop every runtime on this schema, restore "
            "it, and open them again (see 'Restoring a backup' in docs/scaling.md)"
        )

    async def close(self) -> None:
        """Close the connection (at once, if the server does not answer)."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=None)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError):  # fmt: skip
                conn.terminate()

    def terminate(self) -> None:
        """Drop the connection at once (the server rolls back its transaction)."""
        conn = self.conn
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def run(self, ops: Sequence[base.Op], now: float) -> list[Any]:
        """Run one batch; see :meth:`stateward.store.base.Store.execute`.

        Raises:
            NotConnected: there was no connection and none could be opened.
        """
        await self._ensure_connected()
        writes = any(base.is_write(op) for op in ops)
        attempt = 1
        reconnected = False
        while True:
            try:
                results = await self._run_once(ops, float(now), writes)
            except BaseException as exc:
                self._new_ids.clear()
                if breaks_connection(exc):
                    self.terminate()  # the next batch connects again
                    if reconnected or not refused_before_sending(exc):
                        raise
                    # The server said goodbye before this batch (see
                    # refused_before_sending): nothing of it committed. Once more, on a
                    # new connection (NotConnected if none can be had).
                    reconnected = True
                    await self._ensure_connected()
                    continue
                if getattr(exc, "sqlstate", None) not in _TRANSIENT or attempt == _ATTEMPTS:
                    raise
                attempt += 1
                continue
            break
        self.asset_ids.update(self._new_ids)
        self._new_ids.clear()
        if writes:
            self.write_transactions += 1
        return results

    async def _ensure_connected(self) -> None:
        # Before anything of the batch is sent: so a connection that cannot be had
        # fails the batch as not sent (affecting all its requests, not each alone).
        if self.conn is not None and not self.conn.is_closed() and await self._lost_while_idle():
            self.terminate()
        if self.conn is not None and not self.conn.is_closed():
            return
        try:
            await self.connect()
        except Exception as exc:
            self._backoff = min(max(2 * self._backoff, _FIRST_BACKOFF), _MAX_BACKOFF)
            self._retry_at = self.clock() + self._backoff
            raise NotConnected(exc, self._backoff) from exc
        self._backoff = 0.0

    def retry_in(self) -> float:
        """Seconds until the backoff after a failed connection attempt ends (0: none).

        The store waits them out before handing the session a batch, which then makes
        one connection attempt for all its requests.
        """
        if not self._backoff or (self.conn is not None and not self.conn.is_closed()):
            return 0.0
        return max(0.0, self._retry_at - self.clock())

    async def _lost_while_idle(self) -> bool:
        # Between batches the server sends nothing unasked (the store does not LISTEN),
        # so a readable socket means it closed the connection (or sent a notice) while
        # the loop could not look, e.g. while trio's thread was busy. A ping tells which
        # before the batch is sent; a batch sent on a closed connection would fail with
        # its outcome unknown.
        if not _readable(self.conn):
            return False
        try:
            await self.conn.execute("SELECT 1")
        except Exception as exc:
            if breaks_connection(exc):
                return True
            raise
        return False

    async def _run_once(self, ops: Sequence[base.Op], now: float, writes: bool) -> list[Any]:
        # With history on, a write is two statements (the row, its version), except a
        # put, which is one (see _put_versioned); a fenced put is one too, its lease
        # checked in it (see _put_fenced).
        if len(ops) == 1:
            op = ops[0]
            try:
                if isinstance(op, base.Fenced) and type(op.op) is base.Put:
                    return [await self._put_fenced(op, op.op, now)]
                if isinstance(op, _ONE_STATEMENT) and not (
                    self.history > 0 and base.is_write(op) and type(op) is not base.Put
                ):
                    return [await self._apply_or_refuse(op, now)]
            except _NeedsTransaction:
                pass  # nothing was written: run it again in a transaction
        if writes:
            transaction = self.conn.transaction()
        else:
            transaction = self.conn.transaction(isolation="repeatable_read", readonly=True)
        self._in_tx = True
        try:
            async with transaction:
                return await self._apply_all(ops, now)
        finally:
            self._in_tx = False

    async def _apply_all(self, ops: Sequence[base.Op], now: float) -> list[Any]:
        # Consecutive puts (what group commit gathers) go as one pipelined executemany
        # per statement: a round trip or two for the run, not one per put. Their order
        # among themselves is kept; nothing reads between them. A fenced operation's
        # lease is checked once per batch (again after an operation changing leases),
        # all the leases up to such an operation in one statement.
        checked: dict[Lease, bool] = {}
        results: list[Any] = []
        start = 0
        while start < len(ops):
            end = start
            while end < len(ops) and isinstance(_unfenced(ops[end]), base.Put):
                end += 1
            if end - start > 1:
                allowed: list[base.Op] = []
                slots: list[Any] = []
                for index in range(start, end):
                    inner = await self._unfence(ops, index, checked)
                    slots.append(inner if isinstance(inner, Exception) else None)
                    if not isinstance(inner, Exception):
                        allowed.append(inner)
                done = iter(await self._put_many(allowed, now))
                results += [next(done) if slot is None else slot for slot in slots]
                start = end
            else:
                op = ops[start]
                inner = await self._unfence(ops, start, checked)
                if isinstance(inner, Exception):
                    results.append(inner)
                else:
                    results.append(await self._apply_or_refuse(inner, now))
                if base.changes_leases(op):
                    checked.clear()
                start += 1
        return results

    async def _unfence(self, ops: Sequence[base.Op], index: int, checked: dict[Lease, bool]) -> Any:
        """``ops[index]`` itself, its inner operation if fenced and its lease holds, or
        the StaleAttemptError that refuses it.

        A lease not checked yet is checked with every other one not checked yet of the
        fenced operations up to the next operation changing leases, in one statement:
        a batch of puts from many attempts checks their leases in one round trip.
        """
        op = ops[index]
        if not isinstance(op, base.Fenced):
            return op
        if op.lease not in checked:
            asked: dict[Lease, None] = {}
            for later in ops[index:]:
                if base.changes_leases(later):
                    break
                if isinstance(later, base.Fenced) and later.lease not in checked:
                    asked[later.lease] = None
            held = await self.run_sql.held_leases(self.conn, list(asked))
            checked.update((lease, lease in held) for lease in asked)
        return op.op if checked[op.lease] else base.stale_error(op.lease)

    async def _put_many(self, puts: Sequence[base.Op], now: float) -> list[Any]:
        # One statement for the rows of each table, over arrays: the last put of a key
        # wins (nothing reads between them, and they commit together), and rows are
        # written in key order, so two runtimes' batches lock shared rows in one order.
        # Then one statement for their versions, in the puts' order.
        results: list[Any] = []
        rows: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
        versions: dict[str, list[tuple[Any, ...]]] = {}
        for op in puts:
            assert isinstance(op, base.Put)
            refusal: Exception | None = _nul_refusal(op)
            if refusal is None:
                try:
                    sql, params = await self._put_params(op, now)
                except AssetConflictError as exc:
                    refusal = exc
                else:
                    keys = self._key_of(sql, params)
                    rows.setdefault(sql["put_set"], {})[keys] = params
                    self._not_counted(keys)
                    if self.history > 0:
                        who = writer_json(base.provenance(op.who, op.writer))
                        versions.setdefault(sql["version_set"], []).append((*keys, op.value, who))
            results.append(refusal)
        for statement, by_key in rows.items():
            ordered = [by_key[keys] for keys in sorted(by_key)]
            await self.conn.execute(statement, *zip(*ordered, strict=True))
        # Then the versions: the rows are locked by this transaction now, so the
        # statement, reading a snapshot taken after, sees each key's newest version.
        for statement, added in versions.items():
            await self.conn.execute(statement, *zip(*added, strict=True), now, self.history)
        return results

    async def _put_params(self, op: base.Put, now: float) -> tuple[dict[str, str], tuple[Any, ...]]:
        """The statements of the put's scope, and the parameters of ``put``."""
        sql, where = await self._where_to_write(op.scope, now)
        params = (*where, op.key, op.value, text_digest(op.value), now, op.expires_at)
        return sql, params + self._writer_params(op.scope, op.writer)

    async def _put_versioned(self, op: base.Put, now: float) -> bool:
        """A put with history on as one statement (alone in a batch: without
        BEGIN/COMMIT): whether it was done. It is not (nothing written) when another
        transaction changed or inserted the key's row after this statement's snapshot,
        whose newest version would then be stale; the put is then made as two
        statements in a transaction (the row, then its version).

        A key this session last left counted is put by ``put_counted``, which reads
        nothing; if the row is not counted after all (another writer since), by
        ``put_versioned`` after it, which counts it."""
        sql, params = await self._put_params(op, now)
        done, _ = await self._put_statement(sql, params, op)
        return done

    async def _put_statement(
        self, sql: dict[str, str], params: tuple[Any, ...], put: base.Put,
        lease: tuple[Any, ...] = (),
    ) -> tuple[bool, bool]:  # fmt: skip
        """Run a put with history on as one statement: (done, lease held). The counted
        form if the key is known counted, else (or if that did nothing while the lease
        held) the versioned form. ``params`` are the put's; the ``lease`` follows the
        statement's arguments (none: the unfenced forms)."""
        key = self._key_of(sql, params)
        who = writer_json(base.provenance(put.who, put.writer))
        args = (*params, who, self.history)

        async def run(form: str) -> tuple[bool, bool]:
            if lease:
                done, held = await self.conn.fetchrow(sql[f"put_{form}_fenced"], *args, *lease)
                return bool(done), bool(held)
            return bool(await self.conn.fetchval(sql[f"put_{form}"], *args)), True

        if key in self._counted:
            try:
                done, held = await run("counted")
            except asyncpg.UniqueViolationError:
                # The row's version is behind its history: a writer that does not keep
                # it (a runtime older than schema 8, still connected when this one
                # migrated) added versions. The statement wrote nothing (it is alone,
                # no transaction); the versioned form numbers from the history and
                # sets the row right.
                done, held = False, True
            if done or not held:
                return done, held
            del self._counted[key]
        done, held = await run("versioned")
        if done:
            if len(self._counted) >= _COUNTED_KEYS:
                self._counted.clear()
            self._counted[key] = None
        return done, held

    def _key_of(self, sql: dict[str, str], params: tuple[Any, ...]) -> tuple[Any, ...]:
        """The key columns' values among a put's ``params`` (task state's or an asset's,
        by ``sql``)."""
        return params[: len(TASK_KEYS if sql is self.sql.task else ASSET_KEYS)]

    def _not_counted(self, key: tuple[Any, ...]) -> None:
        """Forget ``key`` as counted: a statement that leaves its row's version unknown
        was run."""
        self._counted.pop(key, None)

    async def _put_fenced(self, op: base.Fenced, put: base.Put, now: float) -> Any:
        """A fenced put alone in a batch as one statement, without BEGIN/COMMIT: the
        lease's row read and locked (as in a batch's transaction), then the put, its
        version and the cut, all only if the lease holds. None, or the StaleAttemptError
        that refused it (nothing written).

        Raises:
            _NeedsTransaction: the put was not made, nothing was written (as
                _put_versioned's; or it needs what one statement cannot do: register its
                asset, refuse a NUL after checking the lease).
        """
        if _nul_refusal(put) is not None:
            raise _NeedsTransaction
        sql, params = await self._put_params(put, now)
        lease = attrs.astuple(op.lease)
        if self.history <= 0:
            held = await self.conn.fetchval(sql["put_fenced"], *params, *lease)
            return None if held else base.stale_error(op.lease)
        done, held = await self._put_statement(sql, params, put, lease)
        if not held:
            return base.stale_error(op.lease)
        if not done:
            raise _NeedsTransaction
        return None

    async def _apply_or_refuse(self, op: base.Op, now: float) -> Any:
        refusal = _nul_refusal(op)
        if refusal is not None:
            return refusal
        try:
            return await self._apply(op, now)
        except base.REFUSALS as exc:
            return exc

    # -- scopes -------------------------------------------------------------------------

    async def _asset_id(self, scope: base.AssetScope, now: float, *, register: bool) -> int | None:
        column, ident = ("name", scope.name) if scope.name is not None else ("uri", scope.uri)
        cache_key = f"{column}:{ident}"
        found = self.asset_ids.get(cache_key) or self._new_ids.get(cache_key)
        if found is not None:
            return found
        row = await self.conn.fetchval(
            f"SELECT id FROM {self.sql.s}.asset WHERE {column} = $1", ident
        )
        if row is not None:
            self._new_ids[cache_key] = int(row)
            return int(row)
        if not register:
            return None
        if scope.name is not None and scope.uri is not None:
            return await self._register(AssetInfo(scope.name, scope.uri), now)
        # Referenced by one side only: register that side, bind nothing else.
        if not self._in_tx:
            raise _NeedsTransaction
        s = self.sql.s
        asset_id = await self.conn.fetchval(
            f"INSERT INTO {s}.asset (name, uri, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING id",
            scope.name, scope.uri, now,
        )  # fmt: skip
        if asset_id is None:  # another runtime registered it since the SELECT above
            asset_id = await self.conn.fetchval(
                f"SELECT id FROM {s}.asset WHERE {column} = $1", ident
            )
        self._new_ids[cache_key] = int(asset_id)
        return int(asset_id)

    async def _register(self, asset: AssetInfo, now: float) -> int:
        if self._known(asset):
            return self.asset_ids[f"name:{asset.name}"]
        if not self._in_tx:
            raise _NeedsTransaction
        s = self.sql.s
        asset_id = await self.conn.fetchval(
            f"INSERT INTO {s}.asset (name, uri, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING id",
            asset.name, asset.uri, now,
        )  # fmt: skip
        if asset_id is None:
            # Taken: by this pair, by a one-sided reference this completes, or (a
            # conflict) a name or URI bound to another.
            rows = await self.conn.fetch(
                f"SELECT id, name, uri FROM {s}.asset WHERE name = $1 OR uri = $2 ORDER BY id",
                asset.name, asset.uri,
            )  # fmt: skip
            found = resolve_declaration(asset, [KnownAsset(*row) for row in rows])
            assert found is not None, "the insert met a row with this name or URI"
            asset_id = found.id
            if not found.bound(asset):
                # Only if no other runtime completed it meanwhile; else look again.
                done = await self.conn.fetchval(
                    f"UPDATE {s}.asset SET name = $1, uri = $2 WHERE id = $3 "
                    "AND name IS NOT DISTINCT FROM $4 AND uri IS NOT DISTINCT FROM $5 "
                    "RETURNING id",
                    asset.name, asset.uri, asset_id, found.name, found.uri,
                )  # fmt: skip
                if done is None:
                    return await self._register(asset, now)
        self._new_ids[f"name:{asset.name}"] = int(asset_id)
        self._new_ids[f"uri:{asset.uri}"] = int(asset_id)
        return int(asset_id)

    async def _register_all(self, assets: tuple[AssetInfo, ...], now: float) -> None:
        # All or nothing: a conflict on one asset undoes the others' registration,
        # which a savepoint does even when another runtime registers at the same time.
        new = [a for a in assets if not self._known(a)]
        if len(new) <= 1:
            for asset in new:
                await self._register(asset, now)
            return
        ids_before = dict(self._new_ids)
        try:
            async with self.conn.transaction():  # a savepoint inside the batch's
                for asset in new:
                    await self._register(asset, now)
        except AssetConflictError:
            self._new_ids = ids_before
            raise

    def _known(self, asset: AssetInfo) -> bool:
        # A name and URI cached with one id: that very pair is registered (committed
        # ids never move, and a name or URI belongs to one asset).
        known = self.asset_ids.get(f"name:{asset.name}")
        return known is not None and known == self.asset_ids.get(f"uri:{asset.uri}")

    async def _task_params(self, scope: base.TaskScope) -> tuple[str, str, str, str]:
        """The scope's key columns: its item, or the item that stood at its map index
        in the latest expansion recorded, else the position."""
        item = scope.item
        if item is None:
            item = base.position_item(scope.map_index)
            if scope.map_index >= 0:
                found = await self.conn.fetchval(
                    f"SELECT item FROM {self.sql.s}.task_item WHERE dag_id = $1 AND run_id = $2 "
                    "AND task_id = $3 AND map_index = $4 ORDER BY seq DESC LIMIT 1",
                    scope.dag_id, scope.run_id, scope.task_id, scope.map_index,
                )  # fmt: skip
                item = item if found is None else found
        return (scope.dag_id, scope.run_id, scope.task_id, item)

    async def _where(
        self, scope: base.Scope, now: float
    ) -> tuple[dict[str, str], tuple[Any, ...]] | None:
        """The statements for ``scope`` and its key parameters (``None``: unknown asset)."""
        if isinstance(scope, base.TaskScope):
            return self.sql.task, await self._task_params(scope)
        asset_id = await self._asset_id(scope, now, register=False)
        return None if asset_id is None else (self.sql.asset, (asset_id,))

    async def _where_to_write(
        self, scope: base.Scope, now: float
    ) -> tuple[dict[str, str], tuple[Any, ...]]:
        """Like :meth:`_where`, registering an unknown asset."""
        if isinstance(scope, base.TaskScope):
            return self.sql.task, await self._task_params(scope)
        asset_id = await self._asset_id(scope, now, register=True)
        assert asset_id is not None, "registering gives an id"
        return self.sql.asset, (asset_id,)

    @staticmethod
    def _writer_params(scope: base.Scope, writer: base.Writer | None) -> tuple[Any, ...]:
        if isinstance(scope, base.TaskScope):
            return (scope.map_index, None if writer is None else writer.try_number)
        return _who(writer)

    # -- operations ---------------------------------------------------------------------

    async def _apply(self, op: base.Op, now: float) -> Any:
        conn = self.conn
        match op:
            case base.Get(scope, key):
                found = await self._where(scope, now)
                if found is None:
                    return None
                text = await conn.fetchval(found[0]["get"], *found[1], key, now)
                return None if text is None else decode_stored(key, text)
            case base.Items(scope):
                found = await self._where(scope, now)
                if found is None:
                    return {}
                rows = await conn.fetch(found[0]["items"], *found[1], now)
                return {row["key"]: decode_listed(row["value"]) for row in rows}
            case base.Put(scope, key, value, _, writer, who):
                if self.history > 0 and await self._put_versioned(op, now):
                    return None
                if self.history > 0 and not self._in_tx:
                    raise _NeedsTransaction  # nothing was written
                sql, params = await self._put_params(op, now)
                await conn.execute(sql["put"], *params)
                await self._version(scope, key, value, now, base.provenance(who, writer))
                return None
            case base.Delete(scope, key, who):
                live = await self._delete(scope, key, now)
                if live is not None:
                    await self._version(scope, key, None, now, base.provenance(who))
                return bool(live)
            case base.Clear(scope, all_map_indices, who):
                return await self._clear(scope, all_map_indices, now, base.provenance(who))
            case base.History(scope, key):
                rows = await self._versions(scope, key, now)
                return tuple(base.version_of(row, decode_listed) for row in rows)
            case base.Rollback():
                await self._rollback(op, now)
                return None
            case base.Increment(scope, key, by, expires_at, writer, who):
                new_int = await self._increment(scope, key, by, expires_at, writer, now)
                await self._version(scope, key, str(new_int), now, base.provenance(who, writer))
                return new_int
            case base.CompareAndSet(scope, key, expected, new, expires_at, writer, who):
                if expected is None:
                    sql, where = await self._where_to_write(scope, now)
                else:
                    found = await self._where(scope, now)
                    if found is None:
                        return False  # an unknown asset holds nothing to compare with
                    sql, where = found
                params = (*where, key, new, text_digest(new), now, expires_at)
                params += self._writer_params(scope, writer)
                if expected is None:
                    swapped = bool(await conn.fetchval(sql["cas_absent"], *params))
                else:
                    swapped = bool(await conn.fetchval(sql["cas"], *params, value_digest(expected)))
                if swapped:
                    await self._version(scope, key, new, now, base.provenance(who, writer))
                return swapped
            case base.RegisterAssets(assets):
                await self._register_all(assets, now)
                return None
            case base.LookupAsset(name, uri):
                column, ident = ("name", name) if name is not None else ("uri", uri)
                row = await conn.fetchrow(
                    f"SELECT id, name, uri FROM {self.sql.s}.asset WHERE {column} = $1", ident
                )
                return None if row is None else KnownAsset(*row).info
            case base.ResolveAlias(alias_name):
                rows = await conn.fetch(
                    f"SELECT a.id, a.name, a.uri FROM {self.sql.s}.asset_alias AS m "
                    f"JOIN {self.sql.s}.asset AS a ON a.id = m.asset_id "
                    "WHERE m.alias_name = $1 ORDER BY m.seq",
                    alias_name,
                )
                return tuple(KnownAsset(*row).info for row in rows)
            case base.AddEvent(asset, extra, alias_name, writer):
                await self._add_event(asset, extra, alias_name, writer, now)
                return None
            case base.ListAssetEvents(scope, limit):
                asset_id = await self._asset_id(scope, now, register=False)
                if asset_id is None:
                    return ()
                s = self.sql.s
                rows = await self.conn.fetch(
                    "SELECT a.name, a.uri, e.timestamp, e.extra, e.alias_name, e.dag_id, "
                    "e.run_id, e.task_id, e.map_index, e.try_number "
                    f"FROM {s}.asset_event AS e JOIN {s}.asset AS a ON a.id = e.asset_id "
                    "WHERE e.asset_id = $1 ORDER BY e.id DESC LIMIT $2",
                    asset_id, limit,
                )  # fmt: skip
                return tuple(base.event_of(tuple(row)) for row in rows)
            case base.ListEntries():
                return await self._list(op, now)
            case base.CountEntries(filters):
                return await self._count(filters, now)
            case base.Cleanup(dry_run, orphans_before):
                return await self._cleanup(now, dry_run, orphans_before)
            case base.ListItems(dag_id, run_id):
                t = f"{self.sql.s}.task_item"
                found = await conn.fetch(
                    f"SELECT task_id, map_index, label FROM {t} AS i WHERE dag_id = $1 "
                    f"AND run_id = $2 AND seq = (SELECT MAX(seq) FROM {t} AS j WHERE "
                    "j.dag_id = i.dag_id AND j.run_id = i.run_id AND j.task_id = i.task_id AND "
                    "j.map_index = i.map_index) ORDER BY task_id, map_index",
                    dag_id, run_id,
                )  # fmt: skip
                return tuple(ItemPlace(*row) for row in found)
            case base.RecordItem(dag_id, run_id, task_id, map_index, item, label):
                await conn.execute(
                    f"INSERT INTO {self.sql.s}.task_item (dag_id, run_id, task_id, item, "
                    "map_index, label, seq) SELECT $1, $2, $3, $4, $5, $6, "
                    f"COALESCE(MAX(seq), 0) + 1 FROM {self.sql.s}.task_item WHERE dag_id = $1 "
                    "AND run_id = $2 AND task_id = $3 ON CONFLICT (dag_id, run_id, task_id, item) "
                    "DO UPDATE SET map_index = excluded.map_index, label = excluded.label, "
                    "seq = excluded.seq",
                    dag_id, run_id, task_id, item, map_index, label,
                )  # fmt: skip
                position = base.position_item(map_index)
                if item != position:
                    for adopt in self.run_sql.adopt:  # what the position kept, the item's
                        await conn.execute(adopt, dag_id, run_id, task_id, item, position)
                return None
            case _ if isinstance(op, base.RUN_RECORD_OPS):
                return await self.run_sql.apply(self.conn, op)
            case base.ClearRun():
                # The records here; the state by item, each key with its tombstone.
                keep = attrs.evolve(op, keep_task_state=True)
                cleared = await self.run_sql.apply(self.conn, keep)
                for task_id, map_index in [] if op.keep_task_state else cleared or []:
                    scope = base.TaskScope(op.dag_id, op.run_id, task_id, map_index)
                    await self._clear(scope, False, now, base.provenance(None))
                return cleared
            case _:
                msg = f"PostgresStore cannot execute {type(op).__name__}: {op!r}"
                raise TypeError(msg)

    # -- history ------------------------------------------------------------------------

    async def _history_where(
        self, scope: base.Scope, now: float
    ) -> tuple[str, tuple[str, ...], tuple[Any, ...]] | None:
        """The history table of ``scope``, its scope columns and their values."""
        s = self.sql.s
        if isinstance(scope, base.TaskScope):
            columns = ("dag_id", "run_id", "task_id", "item")
            return f"{s}.task_state_history", columns, await self._task_params(scope)
        asset_id = await self._asset_id(scope, now, register=False)
        if asset_id is None:
            return None
        return f"{s}.asset_state_history", ("asset_id",), (asset_id,)

    async def _version(
        self, scope: base.Scope, key: str, value: str | None, now: float, who: StateWriter
    ) -> None:
        """Add a version of ``key`` (``value`` None: a tombstone); cut to ``history``.

        A statement of its own after the write: it reads the newest version committed
        when it starts, and the write before it holds the key's row lock.
        """
        if self.history <= 0:
            return
        await self.conn.execute(*await self._version_statement(scope, key, value, now, who))

    async def _version_statement(
        self, scope: base.Scope, key: str, value: str | None, now: float, who: StateWriter
    ) -> tuple[Any, ...]:
        """The statement adding a version, then its parameters."""
        found = await self._where(scope, now)
        assert found is not None, "a scope written to is known"
        sql, where = found
        self._not_counted((*where, key))  # the write before it left the row not counted
        return (sql["version"], *where, key, value, now, writer_json(who), self.history)

    async def _versions(self, scope: base.Scope, key: str, now: float) -> list[tuple[Any, ...]]:
        found = await self._history_where(scope, now)
        if found is None:
            return []
        table, columns, params = found
        where = " AND ".join(f"{c} = ${i + 1}" for i, c in enumerate(columns))
        rows = await self.conn.fetch(
            f"SELECT version, value, updated_at, updated_by FROM {table} "
            f"WHERE {where} AND key = ${len(params) + 1} ORDER BY version DESC",
            *params, key,
        )  # fmt: skip
        return [tuple(row) for row in rows]

    async def _rollback(self, op: base.Rollback, now: float) -> None:
        kept = await self._versions(op.scope, op.key, now)
        old, marked = base.rollback_to(op, [(row[0], row[1]) for row in kept])
        if old is not None:
            put = base.Put(op.scope, op.key, old, op.expires_at, op.writer)
            sql, params = await self._put_params(put, now)
            await self.conn.execute(sql["put"], *params)
        else:
            await self._delete(op.scope, op.key, now)
        await self._version(op.scope, op.key, old, now, marked)

    async def _delete(self, scope: base.Scope, key: str, now: float) -> bool | None:
        """Delete the row: whether it was live, ``None`` if there was none."""
        found = await self._where(scope, now)
        if found is None:
            return None
        live: bool | None = await self.conn.fetchval(found[0]["delete"], *found[1], key, now)
        return live

    async def _clear(
        self, scope: base.Scope, all_map_indices: bool, now: float, who: StateWriter
    ) -> int:
        s = self.sql.s
        if isinstance(scope, base.TaskScope):
            params: tuple[Any, ...] = await self._task_params(scope)
            where = "dag_id = $1 AND run_id = $2 AND task_id = $3 AND item = $4"
            if all_map_indices:
                params, where = params[:3], where.rsplit(" AND ", 1)[0]
            rows = await self.conn.fetch(
                f"DELETE FROM {s}.task_state WHERE {where} "
                "RETURNING dag_id, run_id, task_id, item, key",
                *params,
            )
            for row in sorted(tuple(r) for r in rows):
                task = base.TaskScope(row[0], row[1], row[2], item=row[3])
                await self._version(task, row[4], None, now, who)
            return len(rows)
        asset_id = await self._asset_id(scope, now, register=False)
        if asset_id is None:
            return 0
        keys = await self.conn.fetch(
            f"DELETE FROM {s}.asset_state WHERE asset_id = $1 RETURNING key", asset_id
        )
        for key in sorted(row[0] for row in keys):
            await self._version(scope, key, None, now, who)
        return len(keys)

    async def _increment(
        self, scope: base.Scope, key: str, by: int, expires_at: float | None,
        writer: base.Writer | None, now: float,
    ) -> int:  # fmt: skip
        check_int_digits(key, by, "the amount")
        sql, where = await self._where_to_write(scope, now)
        params = (*where, key, by, now, expires_at, *self._writer_params(scope, writer))
        new = await self.conn.fetchval(sql["increment"], *params)
        if new is not None:
            return int(new)
        # The key is live and holds no int, or the sum would be too long; the statement
        # locked its row, so within a transaction this read sees the value refused.
        if not self._in_tx:
            raise _NeedsTransaction
        text = await self.conn.fetchval(sql["get"], *where, key, now)
        if text is not None and _INT_TEXT.fullmatch(text):
            raise StateValueError(int_digits_message(key, "the result"), key=key)
        current = None if text is None else decode_stored(key, text)
        raise StateTypeError(increment_type_message(key, current), key=key)

    async def _add_event(
        self, asset: AssetInfo, extra: str, alias_name: str | None, writer: base.Writer | None,
        now: float,
    ) -> None:  # fmt: skip
        s = self.sql.s
        asset_id = await self._register(asset, now)
        await self.conn.execute(
            f"INSERT INTO {s}.asset_event (asset_id, alias_name, extra, dag_id, run_id, "
            "task_id, map_index, try_number, timestamp) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            asset_id, alias_name, extra, *_who(writer), now,
        )  # fmt: skip
        if alias_name is not None:
            await self.conn.execute(
                f"INSERT INTO {s}.asset_alias (alias_name, asset_id, created_at) "
                "VALUES ($1, $2, $3) ON CONFLICT (alias_name, asset_id) DO NOTHING",
                alias_name, asset_id, now,
            )  # fmt: skip

    async def _list(self, f: base.ListEntries, now: float) -> tuple[StateEntry, ...]:
        entries: list[StateEntry] = []
        if f.scope in (None, "task") and f.asset_name is None:
            # Where each item stood in the latest expansion, else where it last wrote.
            where, params = self._task_filters(f, now)
            page, paged = _page(f, len(params))
            rows = await self.conn.fetch(
                "SELECT s.dag_id, s.run_id, s.task_id, s.map_index, i.map_index, i.label,"
                " s.key, s.value, s.updated_at, s.expires_at, s.writer_try"
                f" FROM {self._task_listed} WHERE {where} ORDER BY s.dag_id COLLATE \"C\","
                ' s.run_id COLLATE "C", s.task_id COLLATE "C", COALESCE(i.map_index, s.map_index),'
                f' COALESCE(i.label, \'\') COLLATE "C", s.key COLLATE "C"{page}',
                *params, *paged,
            )  # fmt: skip
            for dag_id, run_id, task_id, wrote_at, stands_at, label, *row in rows:
                key, value, updated, expires, tn = row
                map_index = wrote_at if stands_at is None else stands_at
                writer = None if tn is None else base.Writer(dag_id, run_id, task_id, wrote_at, tn)
                entries.append(
                    StateEntry(
                        "task", key, decode_listed(value), updated, expires,
                        dag_id, run_id, task_id, map_index,
                        writer=None if writer is None else writer.label, item=label,
                    )
                )  # fmt: skip
        no_task_filter = f.dag_id is None and f.run_id is None and f.task_id is None
        if f.scope in (None, "asset") and no_task_filter and f.map_index is None:
            # An asset known by one side only reads as Airflow's rule says.
            named = "COALESCE(a.name, a.uri)"
            where, params = self._asset_filters(f, now)
            page, paged = _page(f, len(params))
            rows = await self.conn.fetch(
                f"SELECT {named}, COALESCE(a.uri, a.name), s.key, s.value, s.updated_at,"
                " s.expires_at,"
                " s.writer_dag_id, s.writer_run_id, s.writer_task_id, s.writer_map_index,"
                f" s.writer_try FROM {self._asset_listed} WHERE {where}"
                f' ORDER BY {named} COLLATE "C", s.key COLLATE "C"{page}',
                *params, *paged,
            )  # fmt: skip
            for name, uri, key, value, updated, expires, *who in rows:
                label = None if who[0] is None else base.Writer(*who).label
                entries.append(
                    StateEntry(
                        "asset", key, decode_listed(value), updated, expires,
                        asset_name=name, asset_uri=uri, writer=label,
                    )
                )  # fmt: skip
        return tuple(entries)

    async def _count(self, f: base.ListEntries, now: float) -> int:
        count = 0
        if f.scope in (None, "task") and f.asset_name is None:
            where, params = self._task_filters(f, now)
            sql = f"SELECT count(*) FROM {self._task_listed} WHERE {where}"
            count += int(await self.conn.fetchval(sql, *params))
        no_task_filter = f.dag_id is None and f.run_id is None and f.task_id is None
        if f.scope in (None, "asset") and no_task_filter and f.map_index is None:
            where, params = self._asset_filters(f, now)
            sql = f"SELECT count(*) FROM {self._asset_listed} WHERE {where}"
            count += int(await self.conn.fetchval(sql, *params))
        return count

    @property
    def _task_listed(self) -> str:
        s = self.sql.s
        return (
            f"{s}.task_state AS s LEFT JOIN {s}.task_item AS i"
            " ON i.dag_id = s.dag_id AND i.run_id = s.run_id AND i.task_id = s.task_id"
            " AND i.item = s.item"
        )

    @property
    def _asset_listed(self) -> str:
        s = self.sql.s
        return f"{s}.asset_state AS s JOIN {s}.asset AS a ON a.id = s.asset_id"

    @staticmethod
    def _task_filters(f: base.ListEntries, now: float) -> tuple[str, tuple[object, ...]]:
        # An unmapped instance keeps its state under item '' (a prefix of the key).
        unmapped = base.position_item(-1) if f.map_index == -1 else None
        columns: dict[str, object] = {
            "s.dag_id": f.dag_id, "s.run_id": f.run_id, "s.task_id": f.task_id,
            "s.item": unmapped, "s.key": f.key,
            "COALESCE(i.map_index, s.map_index)": f.map_index,
        }  # fmt: skip
        return filters(columns, now, f.include_expired, "s.")

    @staticmethod
    def _asset_filters(f: base.ListEntries, now: float) -> tuple[str, tuple[object, ...]]:
        columns: dict[str, object] = {"COALESCE(a.name, a.uri)": f.asset_name, "s.key": f.key}
        return filters(columns, now, f.include_expired, "s.")

    async def _cleanup(self, now: float, dry_run: bool, orphans_before: float | None) -> int:
        s = self.sql.s
        if dry_run:
            count = 0
            for table in ("task_state", "asset_state"):
                sql = f"SELECT count(*) FROM {s}.{table} WHERE expires_at <= $1"
                count += int(await self.conn.fetchval(sql, now))
            return count
        who = base.CLEANUP_WRITER
        tasks = await self.conn.fetch(
            f"DELETE FROM {s}.task_state WHERE expires_at <= $1 "
            "RETURNING dag_id, run_id, task_id, item, key",
            now,
        )
        for row in sorted(tuple(r) for r in tasks):
            await self._version(
                base.TaskScope(row[0], row[1], row[2], item=row[3]), row[4], None, now, who
            )
        assets = await self.conn.fetch(
            f"DELETE FROM {s}.asset_state AS t USING {s}.asset AS a WHERE a.id = t.asset_id "
            "AND t.expires_at <= $1 RETURNING a.name, a.uri, t.key",
            now,
        )
        for name, uri, key in sorted(tuple(r) for r in assets):
            await self._version(base.AssetScope(name, uri), key, None, now, who)
        await self._trim_history(orphans_before)
        return len(tasks) + len(assets)

    async def _trim_history(self, orphans_before: float | None) -> None:
        """Cut every key's history to ``history`` versions; drop the history of task
        instances that hold no state and changed last before ``orphans_before``."""
        s = self.sql.s
        task_scope = "dag_id, run_id, task_id, item"
        for table, columns in (
            ("task_state_history", task_scope), ("asset_state_history", "asset_id"),
        ):  # fmt: skip
            same = " AND ".join(f"n.{c} = h.{c}" for c in (*columns.split(", "), "key"))
            await self.conn.execute(
                f"DELETE FROM {s}.{table} AS h WHERE h.version <= "
                f"(SELECT MAX(n.version) FROM {s}.{table} AS n WHERE {same}) - $1",
                max(self.history, 0),
            )
        if self.history <= 0:
            # Every version was cut: no row's number is its newest version any more
            # (a counted put would number from it, and an item adopting a history
            # could meet it), so each row counts afresh from its (empty) history.
            for table in ("task_state", "asset_state"):
                await self.conn.execute(
                    f"UPDATE {s}.{table} SET version = NULL WHERE version IS NOT NULL"
                )
            self._counted.clear()
        # A run's record of where its items stood goes when the task holds nothing.
        run = " AND ".join(f"x.{c} = i.{c}" for c in ("dag_id", "run_id", "task_id"))
        await self.conn.execute(
            f"DELETE FROM {s}.task_item AS i WHERE NOT EXISTS (SELECT 1 FROM {s}.task_state "
            f"AS x WHERE {run}) AND NOT EXISTS (SELECT 1 FROM {s}.task_state_history AS x "
            f"WHERE {run})"
        )
        if orphans_before is None:
            return
        same = " AND ".join(f"t.{c} = h.{c}" for c in task_scope.split(", "))
        await self.conn.execute(
            f"DELETE FROM {s}.task_state_history WHERE ({task_scope}) IN ("
            f"SELECT {task_scope} FROM {s}.task_state_history AS h "
            f"WHERE NOT EXISTS (SELECT 1 FROM {s}.task_state AS t WHERE {same}) "
            f"GROUP BY {task_scope} HAVING MAX(updated_at) <= $1)",
            orphans_before,
        )


def _page(f: base.ListEntries, given: int) -> tuple[str, tuple[int, ...]]:
    """The LIMIT and OFFSET of a page of ``f`` after ``given`` parameters."""
    if f.limit is None:
        return "", ()
    return f" LIMIT ${given + 1} OFFSET ${given + 2}", (f.limit, f.offset)
