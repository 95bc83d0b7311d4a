"""The PostgreSQL store (the ``postgres`` extra): the store, its session and schema.

Importing this package imports asyncpg and trio-asyncio, so nothing imports it until a
``postgresql://`` URL is opened (see :mod:`stateward.store.registry`).
"""

from __future__ import annotations

from typing import Any

from .store import PostgresStore as PostgresStore
from .store import redact_dsn as redact_dsn

__all__ = ["PostgresStore", "open_postgres", "redact_dsn"]


def open_postgres(url: str, /, *, create: bool = True, **options: Any) -> PostgresStore:
    """The opener :func:`~stateward.store.open_store` calls for ``postgresql://`` URLs.

    The server holds the database, so ``create`` changes nothing: opening creates
    stateward's schema in it. ``options`` are :class:`PostgresStore`'s (``schema``,
    ``connect_timeout``, ``command_timeout``, ...).
    """
    return PostgresStore(url, **options)
