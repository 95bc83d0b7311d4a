"""Opening a store from a URL or a path: the one door to every backend.

``open_store(url)`` picks the backend by the URL's prefix (``memory:``,
``sqlite:///``, ``postgresql://``; a plain path is an SQLite file) and calls its
opener. A backend is a prefix and an opener named as ``"module:function"``, imported
only when a URL of that backend is first opened, so an optional driver (asyncpg) is
imported only by whoever uses it. A new backend is one :func:`register_backend` call.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import attrs

from .base import Store


class Opener(Protocol):
    """Make a store for ``url`` (not opened yet: the caller enters it)."""

    def __call__(self, url: str, /, *, create: bool = True, **options: Any) -> Store:
        """Args: ``url`` as given; ``create``: whether a missing database may be created
        (if not, a missing one raises FileNotFoundError); ``options``: the backend's own.
        """
        ...


@attrs.frozen
class Backend:
    """A kind of store :func:`open_store` can open."""

    #: A short name for messages (``"sqlite"``).
    name: str
    #: The URL prefixes it claims, e.g. ``("postgresql://", "postgres://")``.
    prefixes: tuple[str, ...]
    #: The opener, or where to import it from (``"package.module:function"``).
    opener: Opener | str

    def load(self) -> Opener:
        """The opener, importing its module the first time."""
        if not isinstance(self.opener, str):
            return self.opener
        module, _, name = self.opener.partition(":")
        found: Opener = getattr(importlib.import_module(module), name)
        return found


_BACKENDS: dict[str, Backend] = {}
#: The backend of a path with no prefix.
_FILE_BACKEND = "sqlite"


def register_backend(name: str, *, prefixes: tuple[str, ...], opener: Opener | str) -> None:
    """Make :func:`open_store` (and so ``open_runtime(db=...)`` and ``--db``) open
    URLs that start with one of ``prefixes`` with ``opener``.

    Args:
        name: The backend's name; registering a name again replaces it.
        prefixes: URL prefixes, e.g. ``("redis://",)``.
        opener: A callable ``(url, *, create=True, **options) -> Store``, or its
            ``"module:function"`` path, imported when first needed.

    Raises:
        ValueError: a prefix is already claimed by another backend.
    """
    for prefix in prefixes:
        for other in _BACKENDS.values():
            if other.name != name and prefix in other.prefixes:
                msg = (
                    f"the URL prefix {prefix!r} already opens the {other.name!r} store; "
                    f"give the {name!r} store a prefix of its own"
                )
                raise ValueError(msg)
    _BACKENDS[name] = Backend(name, prefixes, opener)


def backend_for(url: str | os.PathLike[str]) -> Backend:
    """The backend that opens ``url`` (a path without a known prefix: SQLite).

    Raises:
        ValueError: ``url`` has a scheme (``name://``) that no backend claims.
    """
    if not isinstance(url, str):
        return _BACKENDS[_FILE_BACKEND]
    for backend in _BACKENDS.values():
        if url.startswith(backend.prefixes):
            return backend
    scheme, sep, _ = url.partition("://")
    if sep and scheme.isidentifier():
        known = ", ".join(p for b in _BACKENDS.values() for p in b.prefixes)
        # Only the scheme is shown: the rest may hold a password.
        msg = (
            f"no store opens URLs of scheme {scheme + '://'!r}; use one of {known}, or a "
            "file path (an SQLite database); a new backend is added with register_backend()"
        )
        raise ValueError(msg)
    return _BACKENDS[_FILE_BACKEND]


def open_store(url: str | os.PathLike[str], /, *, create: bool = True, **options: Any) -> Store:
    """The store ``url`` names, not opened yet (enter it, or give it to ``open_runtime``).

    Args:
        url: ``"memory:"`` (or ``":memory:"``) for a MemoryStore; a file path or
            ``"sqlite:///relative.db"`` / ``"sqlite:////absolute.db"`` for an SQLite file;
            ``"postgresql://user:password@host/db"`` for PostgreSQL (the ``postgres``
            extra); or a prefix a registered backend claims.
        create: Whether a missing database may be created; if not, a missing SQLite
            file raises FileNotFoundError (a server or memory has nothing to miss).
        options: The backend's own options, e.g. ``synchronous`` and ``busy_timeout``
            for SQLite; an option the backend does not take raises TypeError.

    Raises:
        ValueError: no backend opens ``url``.
        ImportError: the backend's optional dependencies are not installed.
        FileNotFoundError: ``create`` is false and the database does not exist.
    """
    opener = backend_for(url).load()
    return opener(os.fspath(url), create=create, **options)


register_backend(
    "memory", prefixes=("memory:", ":memory:"), opener=f"{__package__}.memory:open_memory"
)
register_backend("sqlite", prefixes=("sqlite://",), opener=f"{__package__}.sqlite:open_sqlite")
register_backend(
    "postgres",
    prefixes=("postgresql://", "postgres://"),
    opener=f"{__package__}.postgres:open_postgres",
)
