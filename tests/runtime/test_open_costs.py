"""What opening a runtime looks up once per process, not once per open."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from stateward import MemoryStore, open_runtime
from stateward._runtime import supervisor
from stateward.store import SqliteStore


async def test_the_os_user_is_looked_up_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out-of-band writers name the OS user, which does not change: each runtime
    opened reuses the first lookup."""
    calls: list[None] = []

    def getuser() -> str:
        calls.append(None)
        return "ann"

    monkeypatch.setattr(getpass, "getuser", getuser)
    supervisor._os_user.cache_clear()
    try:
        for _ in range(3):
            async with open_runtime(store=MemoryStore()) as rt:
                assert rt.supervisor.out_of_band.user == "ann"
    finally:
        supervisor._os_user.cache_clear()
    assert len(calls) == 1


def test_a_store_method_without_on_commit_keeps_the_plain_path(tmp_path: Path) -> None:
    """Whether a store's execute takes on_commit is decided by its own method (looked
    at once per method): a subclass overriding it without on_commit is not sent one."""

    class Plain(SqliteStore):
        async def execute(self, batch: Any, *, now: float) -> Any:  # type: ignore[override]
            return await super().execute(batch, now=now)

    for _ in range(2):
        assert supervisor.Supervisor(SqliteStore(tmp_path / "a.db"))._answers_on_commit
        assert not supervisor.Supervisor(Plain(tmp_path / "b.db"))._answers_on_commit
