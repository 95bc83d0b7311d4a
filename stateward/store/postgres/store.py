"""PostgresStore: state in a PostgreSQL database, shared by runtimes on many machines.

The driver is asyncpg, hosted on trio by trio-asyncio (as python-trio's triopg does):
the store opens its own trio-asyncio loop in ``__aenter__`` and closes it in
``__aexit__``, in the same task, and each batch crosses into asyncio once
(:class:`~stateward.store.postgres.session.Session` runs all its statements there). Errors
come back as raised, never wrapped in exception groups.

Values are stored as their JSON text in ``text`` columns, not ``jsonb``: jsonb reorders
object keys and turns ``1e+16`` into ``10000000000000000`` (an int when read back), and
a stored value must read back exactly. Compare-and-set compares ``value_digest``, the
SHA-256 of the value's canonical JSON (keys sorted), so ``{"a":1,"b":2}`` equals
``{"b":2,"a":1}`` but ``1`` is not ``1.0`` and ``true`` is not ``1``.

The DSN's password never appears in ``repr()``, logs or error messages.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Final

import attrs
import trio

try:
    import asyncpg
    import trio_asyncio
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    _msg = (
        f"the PostgreSQL store needs asyncpg and trio-asyncio ({exc}); "
        "install them with: pip install 'stateward[postgres]'"
    )
    raise ImportError(_msg) from exc

from ..._errors import RuntimeClosedError, StoreError
from ..._nursery import raise_sole
from ..base import DEFAULT_HISTORY, Op
from ..conflicts import store_error_message
from .schema import DEFAULT_SCHEMA, quoted
from .session import NotConnected, Session, breaks_connection

#: URL schemes that select this store in ``open_runtime(db=...)`` and ``--db``.
URL_SCHEMES: Final = ("postgresql://", "postgres://")
#: What the driver raises: reported as StoreError.
_DRIVER_ERRORS: Final = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    TimeoutError,
)  # fmt: skip
#: How long past command_timeout the client waits for the server to report it.
_GRACE: Final = 2.0
#: query_canceled (statement_timeout) and lock_not_available: waits every request meets.
_WAIT_SQLSTATES: Final = frozenset({"57014", "55P03"})
_PASSWORD_IN_QUERY: Final = re.compile(r"(?i)((?:^|&)(?:ssl)?password=)[^&]*")


async def sleep_monotonic(seconds: float) -> None:
    """Wait ``seconds`` on the monotonic clock: not on trio's clock, which a test's
    MockClock moves (a thread sleeps; cancelling the wait abandons it)."""
    await trio.to_thread.run_sync(time.sleep, seconds, abandon_on_cancel=True)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (in the user part or the query) replaced by ``***``."""
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = _PASSWORD_IN_QUERY.sub(r"\1***", parts.query)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _check_dsn(dsn: str) -> None:
    """Refuse a DSN that URL parsing would cut short (an unencoded ``#``, ``/`` or ``?``
    in the password), showing none of its user part.

    Raises:
        ValueError: the DSN does not parse as a URL with a host and an optional port.
    """
    parts = urllib.parse.urlsplit(dsn)
    scheme, _, rest = dsn.partition("://")
    try:
        parts.port  # noqa: B018 - parsing it is the check
        well_formed = "@" not in rest.partition(parts.netloc)[2] and bool(parts.netloc)
    except ValueError:
        well_formed = False
    if not well_formed:
        host = rest.rpartition("@")[2] if "@" in rest else rest
        msg = (
            f"the PostgreSQL DSN {scheme}://***@{host!r} does not parse: percent-encode "
            "'#', '/', '?' and '@' in the user name and password (e.g. urllib.parse.quote)"
        )
        raise ValueError(msg)


def _passwords(dsn: str) -> list[str]:
    parts = urllib.parse.urlsplit(dsn)
    found = [parts.password or ""]
    found += [v for k, v in urllib.parse.parse_qsl(parts.query) if k.lower().endswith("password")]
    found = [p for p in found if p]
    return found + [urllib.parse.quote(p) for p in found]


def failure_message(where: str, exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """Say what failed on the server at ``where`` (a redacted DSN) and what to do."""
    text = str(exc) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    state = getattr(exc, "sqlstate", None) or ""
    if state == "57014" and "statement timeout" in text:
        hint = (
            "a statement ran past command_timeout, e.g. waiting for a row another runtime "
            "holds; nothing of the batch was written; raise command_timeout if that is normal"
        )
    elif isinstance(exc, TimeoutError):
        hint = "the server did not answer in time; check it is up, or raise command_timeout"
    elif breaks_connection(exc):
        hint = "the connection failed; check the server is up and reachable (it reconnects)"
    elif state.startswith("28"):
        hint = "the server refused the credentials; check the user and password in the DSN"
    elif state == "3D000":
        hint = "the database does not exist; create it (createdb) or fix the DSN"
    elif state == "42501":
        hint = "the user lacks a privilege; grant it CREATE on the database, or use the owner"
    elif state.startswith("53"):
        hint = "the server ran out of a resource (disk, memory, connections); free some"
    elif state.startswith("57"):
        hint = "the server is shutting down or cancelled the statement; retry"
    else:
        hint = "see the PostgreSQL error above"
    return store_error_message(f"PostgreSQL store {where}", text, hint)


class PostgresStore:
    """A durable Store in a PostgreSQL database, shared by any number of runtimes.

    One connection (the supervisor runs one batch at a time), opened with the store
    and opened again by the next batch if it was lost. The schema is created or
    migrated on opening. Timeouts are measured on the monotonic clock, not trio's (a
    test's autojumping MockClock would fire them while the server is still answering).

    Args:
        dsn: A ``postgresql://user:password@host:port/database`` URL; libpq's
            parameters in the query string (``?sslmode=require``) work as asyncpg
            reads them.
        schema: The PostgreSQL schema holding stateward's tables (created if missing).
        connect_timeout: Seconds to connect and bring the schema up to date.
        command_timeout: Seconds one statement may take, waits for another runtime's
            row locks included: the server's ``statement_timeout``, so the server
            undoes the statement and the batch fails with StoreError, nothing written.
            A batch whose server does not answer within this plus 2 s has its
            connection closed (the next batch opens another). None: no limit.
        history: How many versions of each key to keep (0: none).

    Attributes:
        sleep: Waits out what is left of the backoff after a failed connection attempt
            (on the monotonic clock, like the backoff); replaceable in tests.
    """

    sleep = staticmethod(sleep_monotonic)

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 30.0,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(URL_SCHEMES):
            shown = redact_dsn(dsn) if isinstance(dsn, str) else dsn
            msg = f"a PostgreSQL DSN starts with postgresql:// or postgres://, got {shown!r}"
            raise ValueError(msg)
        _check_dsn(dsn)
        quoted(schema)  # checks the name
        for name, value in (("connect_timeout", connect_timeout),
                            ("command_timeout", command_timeout)):  # fmt: skip
            if value is not None and not value > 0:
                msg = f"{name} must be a positive number of seconds or None, got {value!r}"
                raise ValueError(msg)
        self._dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        #: How many versions of each key to keep (0: none); the runtime sets it.
        self.history = history
        #: The DSN with its password replaced by ``***``: what messages show.
        self.redacted_dsn = redact_dsn(dsn)
        self._secrets = _passwords(dsn)
        self._loop_cm: Any = None
        self._loop: Any = None
        self._session: Session | None = None
        self._watchdog: _Watchdog | None = None
        self._write_transactions = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self.redacted_dsn!r}, schema={self.schema!r})"

    @property
    def dsn(self) -> str:
        """The DSN as given, password included (never put it in a message)."""
        return self._dsn

    @property
    def write_transactions(self) -> int:
        """Batches that wrote, each one transaction (for tests and benchmarks)."""
        session = self._session
        return self._write_transactions + (0 if session is None else session.write_transactions)

    async def __aenter__(self) -> PostgresStore:
        """Open the loop and the connection; create or migrate the schema."""
        if self._loop_cm is not None:
            msg = f"{self!r} is already open; one store serves one runtime at a time"
            raise RuntimeError(msg)
        loop_cm = trio_asyncio.open_loop()
        loop = await loop_cm.__aenter__()
        session = Session(self._dsn, self.schema, self.redacted_dsn, self.command_timeout)
        watchdog = _Watchdog(trio.lowlevel.current_trio_token())
        try:
            await self._call(
                loop, watchdog, session, session.connect(), self.connect_timeout, "connect_timeout"
            )
        except BaseException:
            watchdog.stop()
            await _close_loop(loop_cm)
            raise
        self._loop_cm, self._loop, self._session = loop_cm, loop, session
        self._watchdog = watchdog
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection and the loop; the exception in flight, if any, goes on."""
        loop_cm, loop, session, watchdog = self._loop_cm, self._loop, self._session, self._watchdog
        self._loop_cm = self._loop = self._session = self._watchdog = None
        if loop_cm is None or session is None or watchdog is None:
            return
        self._write_transactions += session.write_transactions
        try:
            with trio.CancelScope(shield=True):
                await self._call(
                    loop, watchdog, session, session.close(), self.connect_timeout,
                    "connect_timeout",
                )  # fmt: skip
        finally:
            watchdog.stop()
            # The loop never sees the block's exception: it would come back out of the
            # loop's nurseries wrapped in exception groups. Python re-raises it as it was.
            await _close_loop(loop_cm)

    async def execute(self, ops: Sequence[Op], *, now: float) -> list[Any]:
        """Run ``ops`` in order; see :meth:`stateward.store.base.Store.execute`."""
        session, watchdog = self._session, self._watchdog
        if session is None or watchdog is None:
            msg = f"{self!r} is not open; use it with 'async with' (open_runtime does)"
            raise RuntimeClosedError(msg)
        wait = session.retry_in()
        if wait > 0:
            # A batch that comes while connecting is backed off waits, then tries once
            # for all its requests: failing it at once would only bring the next sooner.
            await self.sleep(wait)
        session.history = self.history
        coro = session.run(ops, now)
        limit = None if self.command_timeout is None else self.command_timeout + _GRACE
        results: list[Any] = await self._call(
            self._loop, watchdog, session, coro, limit, "command_timeout"
        )
        return results

    async def _call(
        self, loop: Any, watchdog: _Watchdog, session: Session, coro: Any, limit: float | None,
        setting: str,
    ) -> Any:  # fmt: skip
        """Run an asyncio coroutine of ``session`` within ``limit`` seconds (``setting``
        names the option that sets the limit, for the message)."""
        with watchdog.limit(limit, session.terminate) as scope:
            try:
                return await loop.run_aio_coroutine(coro)
            except NotConnected as exc:
                raise self._not_connected_error(exc) from exc.cause
            except _DRIVER_ERRORS as exc:
                if not scope.cancel_called:
                    text = failure_message(self.redacted_dsn, exc, self._secrets)
                    # A statement cancelled by statement_timeout or a lock not granted:
                    # the same wait awaits every request, so no request is retried alone.
                    waited = getattr(exc, "sqlstate", None) in _WAIT_SQLSTATES
                    # A connection lost mid-batch may have taken its COMMIT to the server:
                    # running the requests again alone could apply them twice.
                    lost = breaks_connection(exc)
                    if lost:
                        text += (
                            "; the batch's outcome is unknown: its COMMIT may have reached "
                            "the server, so check before you redo it"
                        )
                    raise StoreError(text, affects_all=waited or lost) from exc
        msg = (
            f"PostgreSQL store {self.redacted_dsn} failed: no answer within {limit} s "
            "(the connection was closed and is opened again by the next request; the batch's "
            "outcome is unknown: a COMMIT already sent may have been applied; raise "
            f"{setting} if the server is just slow)"
        )
        raise StoreError(msg, affects_all=True)

    def _not_connected_error(self, exc: NotConnected) -> StoreError:
        # Nothing was sent, and every request of the batch (and of the next ones, until
        # the backoff ends) would meet the same failure: report it for all at once.
        if isinstance(exc.cause, StoreError):  # the schema was refused
            return StoreError(str(exc.cause), affects_all=True)
        text = failure_message(self.redacted_dsn, exc.cause, self._secrets)
        text += (
            f"; nothing of the batch was sent, and the store tries to connect again in "
            f"{exc.retry_in:.1f} s"
        )
        return StoreError(text, affects_all=True)

    @property
    def connect_attempts(self) -> int:
        """Connections attempted, the first included (for tests)."""
        return 0 if self._session is None else self._session.connect_attempts


@attrs.define(eq=False)
class _Limit:
    """One call the watchdog watches."""

    deadline: float
    scope: trio.CancelScope
    on_expiry: Callable[[], None]
    fired: bool = False


class _Watchdog:
    """Real-time limits on the store's calls into asyncio.

    asyncio's timeouts run on the trio-asyncio loop's clock, which is trio's, which in
    tests may be a MockClock that jumps ahead whenever every task waits, as they do
    while the server answers. So one thread of the store's own watches the monotonic
    clock; a call that overruns its limit has its connection closed (which ends
    whatever it waits for) and its cancel scope cancelled.
    """

    _POLL: Final = 0.1

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        #: The call under way: its deadline, scope and what to do when it expires.
        self._call: _Limit | None = None
        self._stopped = threading.Event()
        thread = threading.Thread(target=self._main, name="stateward-pg-watchdog", daemon=True)
        thread.start()

    @contextlib.contextmanager
    def limit(
        self, seconds: float | None, on_expiry: Callable[[], None]
    ) -> Iterator[trio.CancelScope]:
        """A cancel scope that the watchdog cancels after ``seconds`` (None: never)."""
        with trio.CancelScope() as scope:
            if seconds is None:
                yield scope
                return
            self._call = call = _Limit(time.monotonic() + seconds, scope, on_expiry)
            try:
                yield scope
            finally:
                if self._call is call:
                    self._call = None

    def _main(self) -> None:
        while not self._stopped.wait(self._POLL):
            call = self._call
            if call is not None and not call.fired and time.monotonic() >= call.deadline:
                call.fired = True
                try:
                    self._token.run_sync_soon(self._expire, call)
                except trio.RunFinishedError:
                    return

    def _expire(self, call: _Limit) -> None:
        # In trio's thread. Only the call still under way: a later one that reuses the
        # connection must not lose it to a timer that fired for its predecessor.
        if self._call is call:
            call.on_expiry()
            call.scope.cancel()

    def stop(self) -> None:
        """End the thread (within one poll interval)."""
        self._stopped.set()


async def _close_loop(loop_cm: Any) -> None:
    """Leave a trio-asyncio loop cleanly; a failure comes out unwrapped."""
    try:
        await loop_cm.__aexit__(None, None, None)
    except BaseExceptionGroup as group:
        raise_sole(group)
