"""The SQLite store: the embedded, durable default (``store.py``) and its schema."""

from __future__ import annotations

import errno
import os

from .store import SqliteStore as SqliteStore

__all__ = ["SqliteStore", "open_sqlite"]

_URL_PREFIX = "sqlite:///"


def open_sqlite(
    url: str, /, *, create: bool = True, synchronous: str = "FULL", busy_timeout: float = 5.0
) -> SqliteStore:
    """The opener :func:`~stateward.store.open_store` calls for a path or ``sqlite:///``.

    ``sqlite:///state.db`` is ``state.db`` (relative), ``sqlite:////srv/state.db`` is
    ``/srv/state.db``; anything else is taken as the path itself.

    Raises:
        ValueError: a ``sqlite://`` URL without a path.
        FileNotFoundError: ``create`` is false and there is no file at the path.
    """
    path = url
    if url.startswith("sqlite://"):
        if not url.startswith(_URL_PREFIX) or url == _URL_PREFIX:
            msg = (
                f"the SQLite URL {url!r} names no file; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db (or give the path alone)"
            )
            raise ValueError(msg)
        path = url.removeprefix(_URL_PREFIX)
    if not create and not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no stateward database", path)
    return SqliteStore(path, synchronous=synchronous, busy_timeout=busy_timeout)
