"""The PostgreSQL server the tests use, and a database of their own on it.

The server, in this order:

1. ``$STATEWARD_TEST_PG_DSN``, when set (a DSN whose user may ``CREATE DATABASE``);
2. the server at 127.0.0.1:5432, database ``test``, as user ``postgres`` and then as
   the login user, when it answers;
3. a private throwaway cluster started with ``initdb`` / ``pg_ctl`` (found in
   ``/usr/lib/postgresql/*/bin`` or on ``PATH``) on a free loopback port;
4. none: the PostgreSQL tests are skipped, with the reason. Where the tests must not
   be skipped (``$CI`` is true, or ``$STATEWARD_REQUIRE_PG=1`` as ``.ci/run`` sets),
   they fail with that reason instead.

Each session creates ``stateward_test_<pid>_<random>`` on that server and drops it at
the end; each test gets a fresh PostgreSQL schema in it (``PgDatabase.new_schema``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import getpass
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no $USER (some containers)
        return "root"


LOCAL_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    f"postgresql://{urllib.parse.quote(_login())}@127.0.0.1:5432/test",
)
#: Set to 1 to make a missing server fail the PostgreSQL tests instead of skipping them.
REQUIRE_ENV = "STATEWARD_REQUIRE_PG"


def required() -> bool:
    """Whether a missing server is a failure here (CI, or asked for)."""
    flags = (os.environ.get("CI", ""), os.environ.get(REQUIRE_ENV, ""))
    return any(flag.strip().lower() in ("1", "true", "yes") for flag in flags)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an asyncio coroutine to its end from sync code (in a thread: no loop clash)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _probe(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=3)
    await conn.close()


def answers(dsn: str) -> str | None:
    """None if a server answers at ``dsn``, else why not."""
    try:
        run_async(_probe(dsn))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(found):
        if os.access(f"{folder}/initdb", os.X_OK) and os.access(f"{folder}/pg_ctl", os.X_OK):
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free loopback port.

    ``initdb`` refuses to run as root; as root the cluster runs as the ``postgres``
    user. fsync is off: nothing in it outlives the test session.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="stateward-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.user: str | None = None
        self.started = False

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            check=True, capture_output=True, text=True, cwd=self.folder, user=self.user,
        )  # fmt: skip

    def start(self) -> str:
        """Create and start the cluster; return the DSN of its ``postgres`` database."""
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                msg = "initdb cannot run as root and there is no 'postgres' user to run it as"
                raise RuntimeError(msg) from None
            self.user = "postgres"
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
            options = f"-F -p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                      str(self.folder / "log"), "-w", "-t", "30", "start")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            msg = f"{Path(exc.cmd[0]).name} failed: {(exc.stderr or exc.stdout).strip()[-500:]}"
            raise RuntimeError(msg) from exc
        self.started = True
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def find_server(stack: contextlib.ExitStack) -> tuple[str | None, str]:
    """(the admin DSN, how it was found) or (None, why there is none)."""
    given = os.environ.get("STATEWARD_TEST_PG_DSN")
    if given:
        from stateward.store.postgres import redact_dsn

        why = answers(given)
        if why is None:
            return given, "$STATEWARD_TEST_PG_DSN"
        return None, f"$STATEWARD_TEST_PG_DSN={redact_dsn(given)} does not answer: {why}"
    reasons = []
    for dsn in LOCAL_CANDIDATES:
        why = answers(dsn)
        if why is None:
            return dsn, "the local server at 127.0.0.1:5432"
        reasons.append(why)
    bin_dir = _pg_bin()
    if bin_dir is None:
        return None, (
            f"no PostgreSQL server at 127.0.0.1:5432 ({reasons[0]}), no "
            "$STATEWARD_TEST_PG_DSN, and no initdb/pg_ctl to start one"
        )
    cluster = PrivateCluster(bin_dir)
    stack.callback(cluster.stop)
    try:
        return cluster.start(), f"a private cluster from {bin_dir}"
    except RuntimeError as exc:
        return None, f"no PostgreSQL server at 127.0.0.1:5432, and {exc}"


class PgDatabase:
    """The session's own database: its DSN, and a fresh schema per test."""

    def __init__(self, dsn: str, source: str) -> None:
        self.dsn = dsn
        self.source = source
        self._numbers = itertools.count()

    def new_schema(self) -> str:
        """A schema name not used before in this session."""
        return f"t{next(self._numbers)}"


async def _admin(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale_databases(admin: str) -> None:
    """Drop the databases of earlier sessions on this machine that were killed before
    they could drop their own (their pid no longer runs). Only on a loopback server: on
    a shared one the pids may be another machine's."""
    if urllib.parse.urlsplit(admin).hostname not in ("127.0.0.1", "localhost", "::1"):
        return

    async def sweep() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin, timeout=10)
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'stateward\\_test\\_%'"
            )
            for (name,) in names:
                pid = name.split("_")[2]
                if pid.isdigit() and not _alive(int(pid)):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    with contextlib.suppress(Exception):  # best effort: never fail a session for it
        run_async(sweep())


@contextlib.contextmanager
def session_database() -> Iterator[PgDatabase]:
    """Create this session's database (finding or starting a server), drop it after."""
    with contextlib.ExitStack() as stack:
        try:
            import asyncpg  # noqa: F401
            import trio_asyncio  # noqa: F401
        except ImportError as exc:
            admin, source = None, f"{exc} (install the test extra: pip install -e '.[test]')"
        else:
            admin, source = find_server(stack)
        if admin is None:
            if required():
                pytest.fail(f"PostgreSQL tests cannot run: {source}", pytrace=False)
            pytest.skip(f"PostgreSQL tests skipped: {source}")
        _drop_stale_databases(admin)
        name = f"stateward_test_{os.getpid()}_{secrets.token_hex(4)}"
        try:
            run_async(_admin(admin, f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            from stateward.store.postgres import redact_dsn

            why = f"cannot create a test database on {redact_dsn(admin)} ({source}): {exc}"
            if required():
                pytest.fail(f"PostgreSQL tests cannot run: {why}", pytrace=False)
            pytest.skip(f"PostgreSQL tests skipped: {why}")
        try:
            yield PgDatabase(with_database(admin, name), source)
        finally:
            run_async(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
