"""Fixtures of the PostgreSQL store tests (test_postgres, test_pg_faults): a fresh schema of
the session's database and an open store on it. Modules that define their own ``store``
(the behaviour suites, on every store) override it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stateward.store.postgres import PostgresStore
from tests.pg import PgDatabase


@pytest.fixture
def database(pg_database: PgDatabase) -> PgDatabase:
    """The session's PostgreSQL database (these tests skip without a server)."""
    return pg_database


@pytest.fixture
def schema(database: PgDatabase) -> str:
    """A schema of this test's own."""
    return database.new_schema()


@pytest.fixture
async def store(database: PgDatabase, schema: str) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on a fresh schema."""
    async with PostgresStore(database.dsn, schema=schema) as opened:
        yield opened
