"""Opening a store from a URL or a path: ``open_store`` and ``register_backend``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stateward import MemoryStore, SqliteStore, open_runtime
from stateward.store import Store, open_store, register_backend
from stateward.store.registry import backend_for


@pytest.mark.parametrize("url", ["memory:", ":memory:"])
def test_memory_urls_open_a_new_memory_store(url: str) -> None:
    """``memory:`` and ``:memory:`` each give a new, empty MemoryStore."""
    first, second = open_store(url), open_store(url)
    assert isinstance(first, MemoryStore)
    assert first is not second


def test_paths_and_sqlite_urls_open_an_sqlite_file(tmp_path: Path) -> None:
    """A path (str or PathLike) and ``sqlite:///`` URLs name an SQLite file."""
    absolute = tmp_path / "a.db"
    for url in (str(absolute), absolute, f"sqlite:///{absolute}"):
        store = open_store(url)
        assert isinstance(store, SqliteStore)
        assert store.path == str(absolute)
    relative = open_store("sqlite:///state.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == "state.db"


def test_sqlite_options_pass_through_and_others_are_refused(tmp_path: Path) -> None:
    """The backend's own options reach it; an option it does not take is a TypeError."""
    store = open_store(tmp_path / "a.db", synchronous="normal", busy_timeout=1.0)
    assert isinstance(store, SqliteStore)
    assert (store.synchronous, store.busy_timeout) == ("NORMAL", 1.0)
    with pytest.raises(TypeError, match="synchronous"):
        open_store("memory:", synchronous="FULL")


def test_a_sqlite_url_without_a_path_is_refused() -> None:
    """``sqlite://`` with no file says how to write one."""
    with pytest.raises(ValueError, match=r"'sqlite://' names no file; write sqlite:///"):
        open_store("sqlite://")


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    """``create=False`` raises FileNotFoundError for a missing SQLite file, not for memory."""
    with pytest.raises(FileNotFoundError, match="no stateward database"):
        open_store(tmp_path / "missing.db", create=False)
    assert isinstance(open_store("memory:", create=False), MemoryStore)


def test_an_unknown_scheme_is_refused_without_showing_the_rest() -> None:
    """A URL of a scheme no backend claims names the scheme and the known prefixes only."""
    with pytest.raises(
        ValueError, match=r"no store opens URLs of scheme 'mysql://'; use one of"
    ) as caught:
        open_store("mysql://alice:s3cret@db/x")
    assert "s3cret" not in str(caught.value)


async def test_a_registered_backend_opens_its_urls() -> None:
    """``register_backend`` makes ``open_store`` and ``open_runtime(db=)`` open its URLs."""
    opened: list[str] = []

    def open_kv(url: str, /, *, create: bool = True, **options: Any) -> Store:
        opened.append(url)
        return MemoryStore()

    register_backend("kv-test", prefixes=("kv-test://",), opener=open_kv)
    try:
        async with open_runtime("kv-test://here") as rt:
            await rt.state.task("d", "r", "t").aset("k", 1)
        assert opened == ["kv-test://here"]
        with pytest.raises(ValueError, match="'memory:' already opens the 'memory' store"):
            register_backend("kv-test", prefixes=("memory:",), opener=open_kv)
    finally:
        from stateward.store import registry

        registry._BACKENDS.pop("kv-test")


def test_a_bare_import_does_not_load_the_postgres_store() -> None:
    """``import stateward`` (and opening a file store) imports neither asyncpg nor the
    PostgreSQL store; a ``postgresql://`` URL loads it when opened."""
    code = (
        "import sys, stateward\n"
        "from stateward.store import open_store\n"
        "open_store('memory:'); open_store('x.db')\n"
        "print(sorted(m for m in sys.modules if 'asyncpg' in m or 'store.postgres' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert backend_for("postgres://h/db").name == "postgres"
