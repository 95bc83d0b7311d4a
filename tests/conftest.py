"""Fixtures shared by the suite: every behaviour test runs against every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from stateward import MemoryStore, Runtime, SqliteStore, open_runtime
from stateward.store.base import Store


class FakeWallClock:
    """A wall clock that moves only when told to (decides expiry and updated_at)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of stores of one kind; SQLite ones share one file, as a restart would."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
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
