"""The stateward pytest plugin: embed a runtime in a test suite, seed state, run a task.

Installing stateward registers this module as a pytest plugin (``pytest11`` entry
point), so its fixtures need no ``conftest.py``:

- ``sw_runtime`` / ``sw_sqlite_runtime``: an open :class:`~stateward.Runtime` on a
  fresh ``MemoryStore`` / on a SQLite file in the test's ``tmp_path``;
- ``sw`` / ``sw_sqlite``: a :class:`StateHarness` on that runtime, to seed and read
  state by task object and run one task or a whole Dag;
- ``sw_sync``: a :class:`SyncHarness`, the same helpers for plain ``def`` tests.

The async fixtures are pytest-trio fixtures: use them from ``async def`` tests marked
``@pytest.mark.trio`` or run under pytest-trio's ``trio_mode``. Retry delays sleep on
trio's clock, so requesting ``autojump_clock`` makes a retry policy of hours finish at
once. When a test that ran tasks through a harness fails, the report gains a section
with the traceback of every task instance that failed, trimmed to the task's own
frames, and the last lines of its log; :func:`assert_success` raises a task's failure as the test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final, NoReturn

import pytest
import trio

from .._runtime.runtime import Runtime, open_runtime
from ..store.memory import MemoryStore
from .failures import assert_success, collapse, exception_ids, failure_report
from .harness import DEFAULT_RUN_ID, StateHarness
from .sync import SyncHarness

try:
    from pytest_trio import trio_fixture as _trio_fixture
except ImportError:  # pragma: no cover - pytest-trio comes with the ``test`` extra

    def _trio_fixture(func: Callable[..., Any]) -> Any:
        # The entry point is installed with stateward itself: without pytest-trio the
        # plugin must still load (sw_sync works), and the async fixtures say why not.
        def unavailable() -> NoReturn:
            msg = (
                f"the {func.__name__} fixture needs pytest-trio; install it "
                "(pip install 'stateward[test]') or use the sw_sync fixture"
            )
            pytest.fail(msg, pytrace=False)

        unavailable.__doc__ = func.__doc__
        return pytest.fixture(name=func.__name__)(unavailable)


__all__ = [
    "DEFAULT_RUN_ID",
    "StateHarness",
    "SyncHarness",
    "assert_success",
    "sw",
    "sw_runtime",
    "sw_sqlite",
    "sw_sqlite_runtime",
    "sw_sync",
]

# The harnesses a test used, for the failure section of its report.
_HARNESSES: Final = pytest.StashKey[list[StateHarness]]()
# The fixtures that make a test run inside pytest-trio's fixture nurseries.
_TRIO_FIXTURES: Final = frozenset({"sw_runtime", "sw_sqlite_runtime", "sw", "sw_sqlite"})


def _register(request: pytest.FixtureRequest, harness: StateHarness) -> None:
    request.node.stash.setdefault(_HARNESSES, []).append(harness)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the tracebacks and log tails of failed task instances to a failing test's report."""
    report = yield
    harnesses = item.stash.get(_HARNESSES, [])
    if report.when == "call" and report.failed and harnesses:
        raised = call.excinfo.value if call.excinfo is not None else None
        text = failure_report(harnesses, exception_ids(raised))
        if text:
            report.sections.append(("stateward: failed task instances", text))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Report a test using a stateward trio fixture with its own error, not a group.

    pytest-trio runs such a test inside its fixtures' nurseries, which (with trio's
    strict exception groups) wrap a failing assert or a task's failure in one-element
    ``ExceptionGroup`` s; unwrapped, pytest shows it as it shows any other failure.
    """
    __tracebackhide__ = True
    try:
        return (yield)
    except BaseExceptionGroup as group:
        if _TRIO_FIXTURES.isdisjoint(pyfuncitem.fixturenames):
            raise
        error = collapse(group)
    # Raised outside the except block, so the group does not become its __context__.
    raise error


# -- fixtures ---------------------------------------------------------------------------


@_trio_fixture
async def sw_runtime() -> AsyncIterator[Runtime]:
    """An open runtime on a fresh MemoryStore."""
    async with open_runtime(store=MemoryStore(), out_of_band_writer="test") as rt:
        yield rt


@_trio_fixture
async def sw_sqlite_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """An open runtime on a fresh SQLite file, ``tmp_path / "state.db"``."""
    async with open_runtime(tmp_path / "state.db", out_of_band_writer="test") as rt:
        yield rt


@_trio_fixture
async def sw(sw_runtime: Runtime, request: pytest.FixtureRequest) -> StateHarness:
    """A StateHarness on ``sw_runtime`` (MemoryStore): seed, run a task, read state."""
    harness = StateHarness(sw_runtime)
    _register(request, harness)
    return harness


@_trio_fixture
async def sw_sqlite(sw_sqlite_runtime: Runtime, request: pytest.FixtureRequest) -> StateHarness:
    """A StateHarness on ``sw_sqlite_runtime`` (a SQLite file in ``tmp_path``)."""
    harness = StateHarness(sw_sqlite_runtime)
    _register(request, harness)
    return harness


@pytest.fixture
def sw_sync(request: pytest.FixtureRequest) -> Iterator[SyncHarness]:
    """A SyncHarness on a fresh MemoryStore, for plain ``def`` tests.

    Request ``autojump_clock`` (or ``mock_clock``) in the same test and the harness's
    trio runs on that clock, so retry delays are instant.
    """
    clock: trio.abc.Clock | None = None
    for name in ("autojump_clock", "mock_clock"):
        if name in request.fixturenames:
            clock = request.getfixturevalue(name)
            break
    with SyncHarness(clock=clock) as harness:
        _register(request, harness.harness)
        yield harness
