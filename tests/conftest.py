"""Fixtures shared by the suite: every behaviour test runs against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from stateward import MemoryStore, Runtime, SqliteStore, open_runtime
from stateward.store.base import Store
from tests.pg import PgDatabase, session_database

# No per-example deadline: Hypothesis's default (200 ms) is a timed assertion, and on a
# loaded machine the first example of a test (which builds a converter, imports a module)
# can take longer. The examples' count still bounds each test's time.
settings.register_profile("stateward", deadline=None)
settings.load_profile("stateward")


class FakeWallClock:
    """A wall clock that moves only when told to (decides expiry and updated_at)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase]:
    """This session's own PostgreSQL database (skipped, or failed in CI, without a server)."""
    with session_database() as database:
        yield database


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of stores of one kind; SQLite ones share one file and PostgreSQL ones
    one fresh schema, as a restart would."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    if request.param == "postgres":
        from stateward.store.postgres import PostgresStore

        database: PgDatabase = request.getfixturevalue("pg_database")
        schema = database.new_schema()
        return lambda: PostgresStore(database.dsn, schema=schema)
    return lambda: SqliteStore(tmp_path / "state.db")


@pytest.fixture
def wall_clock() -> FakeWallClock:
    """A controllable wall clock for retention tests."""
    return FakeWallClock()


@pytest.fixture
async def rt(make_store: Callable[[], Store], wall_clock: FakeWallClock) -> AsyncIterator[Runtime]:
    """An open runtime on each store in turn."""
    async with open_runtime(store=make_store(), wall_clock=wall_clock) as runtime:
        yield runtime
