"""The stateward pytest plugin: fixtures that embed a runtime in a test suite.

Registered through the ``pytest11`` entry point, so installing stateward is enough.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_trio

from .runtime.runtime import Runtime, open_runtime
from .store.memory import MemoryStore


@pytest_trio.trio_fixture
async def sw_runtime() -> AsyncIterator[Runtime]:
    """An open runtime on a fresh MemoryStore."""
    async with open_runtime(store=MemoryStore()) as rt:
        yield rt


@pytest_trio.trio_fixture
async def sw_sqlite_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """An open runtime on a fresh SQLite file in the test's temporary folder."""
    async with open_runtime(tmp_path / "state.db") as rt:
        yield rt
