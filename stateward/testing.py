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
frames; :func:`assert_success` raises a task's failure as the test's.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, Self, TypeVar

import pytest
import trio

from .assets import Asset, AssetAlias, AssetNameRef, AssetUriRef
from .context.accessors import AssetStateAccessor
from .dag import Dag, Operator
from .errors import AsyncContextError, RuntimeClosedError, TaskFailedError
from .records import AssetInfo
from .runtime import messages as m
from .runtime.runner import SUCCESS, DagRunResult, TaskInstanceResult
from .runtime.runtime import Runtime, RuntimeState, open_runtime
from .store.base import Store
from .store.memory import MemoryStore

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

#: The run id a harness uses when a call names none, so seeding and running agree.
DEFAULT_RUN_ID: Final = "test_run"

ResultT = TypeVar("ResultT", TaskInstanceResult, DagRunResult)
AssetTarget = Asset | AssetNameRef | AssetUriRef | str

# The harnesses a test used, for the failure section of its report.
_HARNESSES: Final = pytest.StashKey[list["StateHarness"]]()
# Modules whose frames are the runtime's machinery, not the task's code.
_MACHINERY: Final = ("stateward", "trio", "outcome")
# The fixtures that make a test run inside pytest-trio's fixture nurseries.
_TRIO_FIXTURES: Final = frozenset({"sw_runtime", "sw_sqlite_runtime", "sw", "sw_sqlite"})


class StateHarness:
    """Seed state, run one task or a Dag, and read state back, by task object.

    A thin layer over an open :class:`~stateward.Runtime` (``.rt``, whose ``rt.state``
    and ``rt.run_task`` stay available): tasks are named by their object instead of
    ``(dag_id, task_id)``, and every call uses one run id unless told otherwise. The
    ``sw`` and ``sw_sqlite`` fixtures make one; outside pytest, wrap any runtime.

    Args:
        rt: An open runtime.
        run_id: The run id of calls that name none.
    """

    __slots__ = ("results", "rt", "run_id")

    def __init__(self, rt: Runtime, *, run_id: str = DEFAULT_RUN_ID) -> None:
        #: The runtime the harness drives.
        self.rt = rt
        #: The run id of calls that name none.
        self.run_id = run_id
        #: Every task instance result of the runs made through this harness, in order.
        self.results: list[TaskInstanceResult] = []

    def __repr__(self) -> str:
        return f"<StateHarness run_id={self.run_id!r} on {self.rt!r}>"

    # -- task state ---------------------------------------------------------------------

    async def seed_task_state(
        self,
        task: Operator,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        **more: Any,
    ) -> None:
        """Write task state for ``task``'s instance, as an earlier try would have.

        ``await sw.seed_task_state(submit, job_id="j-42")``; keys that are not
        identifiers (or are ``run_id``/``map_index``) go in ``values``.

        Args:
            task: The task whose instance owns the state.
            values: Keys and values to write.
            run_id: The run (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
            **more: More keys and values.

        Raises:
            StateValueError: a value that cannot be stored (``None``, NaN, too large).
            StateTypeError: a value that is not JSON.
        """
        accessor = self.rt.state.task(
            task.dag.dag_id, run_id or self.run_id, task.task_id, map_index
        )
        for key, value in {**(values or {}), **more}.items():
            await accessor.aset(key, value)

    async def task_state(
        self, task: Operator, *, run_id: str | None = None, map_index: int = -1
    ) -> dict[str, Any]:
        """Every live key of ``task``'s instance, as a dict (empty if it has none).

        Args:
            task: The task.
            run_id: The run (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
        """
        accessor = self.rt.state.task(
            task.dag.dag_id, run_id or self.run_id, task.task_id, map_index
        )
        return dict(await accessor.aitems())

    # -- asset state --------------------------------------------------------------------

    async def seed_asset_state(
        self, asset: AssetTarget, values: Mapping[str, Any] | None = None, /, **more: Any
    ) -> None:
        """Write state on ``asset``, as earlier runs would have.

        ``await sw.seed_asset_state(ORDERS, watermark=3)``. Pass the
        :class:`~stateward.Asset` the tasks declare: an asset no Dag has declared yet
        is registered by this write, and a bare name registers it with the name as its
        URI too.

        Args:
            asset: The asset, a reference to it, or its name.
            values: Keys and values to write.
            **more: More keys and values.

        Raises:
            StateValueError: a value that cannot be stored.
            StateTypeError: a value that is not JSON.
        """
        if isinstance(asset, Asset):
            # Register it with its own URI: a write by name alone would give it the
            # name as URI, and the Dag declaring the real pair would then clash.
            declare = m.DeclareAssets((AssetInfo(asset.name, asset.uri),))
            await self.rt.admin.request(declare)
        accessor = self._asset(asset)
        for key, value in {**(values or {}), **more}.items():
            await accessor.aset(key, value)

    async def asset_state(self, asset: AssetTarget) -> dict[str, Any]:
        """Every live key of ``asset``'s state, as a dict (empty if it has none).

        Args:
            asset: The asset, a reference to it, or its name.
        """
        return dict(await self._asset(asset).aitems())

    async def seed_asset_event(
        self,
        asset: Asset,
        *,
        alias: AssetAlias | str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an event on ``asset``, as a producer task would, through ``alias`` if given.

        An alias inlet resolves to the assets produced through it, so this is how a
        test prepares what a consumer with ``inlets=[AssetAlias(...)]`` sees.

        Args:
            asset: The asset produced.
            alias: The alias the producer emitted through.
            extra: The event's extra (a JSON dict).
        """
        alias_name = alias.name if isinstance(alias, AssetAlias) else alias
        request = m.AddAssetEvent(asset.name, asset.uri, dict(extra or {}), alias_name)
        await self.rt.admin.request(request)

    def _asset(self, asset: AssetTarget) -> AssetStateAccessor:
        match asset:
            case AssetNameRef(name=name):
                return self.rt.state.asset(name=name)
            case AssetUriRef(uri=uri):
                return self.rt.state.asset(uri=uri)
            case Asset() | str():
                return self.rt.state.asset(asset)
            case _:
                msg = (
                    f"expected an Asset, Asset.ref(...) or an asset name, got {asset!r}; "
                    "pass the Asset your tasks declare"
                )
                raise TypeError(msg)

    # -- running ------------------------------------------------------------------------

    async def run_task(
        self,
        task: Operator,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Run one instance of ``task`` (not its upstream tasks), with its retries.

        Its Dag's assets are declared and its alias inlets resolved, as in a Dag run.
        A failing task does not raise: check ``.state`` or call :func:`assert_success`.

        Args:
            task: The task.
            run_id: The run whose task state it uses (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
            try_number: The first try's number, to test what a retry does.
            params: Overrides of the Dag's params.

        Returns:
            The instance's result, with ``.rendered`` holding its rendered template
            fields.
        """
        result = await self.rt.run_task(
            task,
            run_id=run_id or self.run_id,
            map_index=map_index,
            try_number=try_number,
            params=params,
        )
        self.results.append(result)
        return result

    async def run_dag(
        self, dag: Dag, *, run_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> DagRunResult:
        """Run every task of ``dag`` as one Dag run.

        Args:
            dag: The Dag.
            run_id: The run's id (default: the harness's run id).
            params: Overrides of the Dag's params.

        Returns:
            The run's result; ``.ti(task_id, map_index)`` gives each instance's.
        """
        result = await self.rt.run_dag(dag, run_id=run_id or self.run_id, params=params)
        self.results.extend(result.task_instances)
        return result


class SyncHarness:
    """A :class:`StateHarness` for synchronous code: a runtime on a thread of its own.

    ``with SyncHarness() as sw:`` starts a thread that runs trio with an open runtime;
    each method is the blocking twin of the :class:`StateHarness` method of the same
    name and runs on that thread. Leaving the block closes the runtime and joins the
    thread; an error that ended the runtime is raised there. The ``sw_sync`` fixture
    makes one on a ``MemoryStore``.

    Args:
        db: A SQLite file for the runtime (default: a fresh ``MemoryStore``).
        store: A store object instead of ``db``.
        run_id: The run id of calls that name none.
        clock: The clock trio runs on, e.g. ``trio.testing.MockClock(autojump_threshold=0)``
            to make retry delays instant.
        **runtime_options: More arguments of :func:`~stateward.open_runtime`.
    """

    def __init__(
        self,
        db: str | Path | None = None,
        *,
        store: Store | None = None,
        run_id: str = DEFAULT_RUN_ID,
        clock: trio.abc.Clock | None = None,
        **runtime_options: Any,
    ) -> None:
        if db is None and store is None:
            store = MemoryStore()
        self._db = db
        self._store = store
        self._run_id = run_id
        self._clock = clock
        self._options = runtime_options
        #: Unopened, open (inside the ``with`` block) or closed.
        self.status = RuntimeState.UNOPENED
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._harness: StateHarness | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<SyncHarness {self.status.value} run_id={self._run_id!r}>"

    def __enter__(self) -> Self:
        if self.status is not RuntimeState.UNOPENED:
            msg = f"this SyncHarness is {self.status.value}; make a new one for each 'with' block"
            raise RuntimeClosedError(msg)
        _refuse_async("SyncHarness()", "in an async test use the sw fixture, a StateHarness")
        self.status = RuntimeState.OPEN
        self._thread = threading.Thread(
            target=self._main, name="stateward-sync-harness", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._harness is None:
            self._finish()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.status is RuntimeState.OPEN and self._harness is not None:
            assert self._stop is not None
            assert self._token is not None
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        self._finish()

    def _finish(self) -> None:
        self.status = RuntimeState.CLOSED
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self._clock)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with open_runtime(self._db, store=self._store, **self._options) as rt:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._harness = StateHarness(rt, run_id=self._run_id)
            self._ready.set()
            await self._stop.wait()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.status is not RuntimeState.OPEN or self._harness is None:
            msg = (
                f"SyncHarness.{method}() needs an open harness; "
                f"it is {self.status.value}: use 'with SyncHarness() as sw:'"
            )
            raise RuntimeClosedError(msg)
        _refuse_async(
            f"SyncHarness.{method}()",
            f"in an async test use the sw fixture: 'await sw.{method}(...)'",
        )
        function = functools.partial(getattr(self._harness, method), *args, **kwargs)
        try:
            return trio.from_thread.run(function, trio_token=self._token)
        except trio.RunFinishedError:
            msg = f"SyncHarness.{method}(): the harness's runtime has stopped"
            raise RuntimeClosedError(msg) from self._error

    @property
    def harness(self) -> StateHarness:
        """The async harness on the runtime's thread (await its methods only there)."""
        if self._harness is None:
            msg = "the SyncHarness is not open; use 'with SyncHarness() as sw:'"
            raise RuntimeClosedError(msg)
        return self._harness

    @property
    def rt(self) -> Runtime:
        """The runtime; from this thread use its sync accessors (``rt.state.task(...).get``)."""
        return self.harness.rt

    @property
    def run_id(self) -> str:
        """The run id of calls that name none."""
        return self._run_id

    @property
    def results(self) -> list[TaskInstanceResult]:
        """Every task instance result of the runs made through this harness, in order."""
        return self.harness.results

    def seed_task_state(
        self,
        task: Operator,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        **more: Any,
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_task_state`."""
        self._call("seed_task_state", task, values, run_id=run_id, map_index=map_index, **more)

    def task_state(
        self, task: Operator, *, run_id: str | None = None, map_index: int = -1
    ) -> dict[str, Any]:
        """Blocking twin of :meth:`StateHarness.task_state`."""
        state: dict[str, Any] = self._call("task_state", task, run_id=run_id, map_index=map_index)
        return state

    def seed_asset_state(
        self, asset: AssetTarget, values: Mapping[str, Any] | None = None, /, **more: Any
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_asset_state`."""
        self._call("seed_asset_state", asset, values, **more)

    def asset_state(self, asset: AssetTarget) -> dict[str, Any]:
        """Blocking twin of :meth:`StateHarness.asset_state`."""
        state: dict[str, Any] = self._call("asset_state", asset)
        return state

    def seed_asset_event(
        self,
        asset: Asset,
        *,
        alias: AssetAlias | str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_asset_event`."""
        self._call("seed_asset_event", asset, alias=alias, extra=extra)

    def run_task(
        self,
        task: Operator,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Blocking twin of :meth:`StateHarness.run_task`."""
        result: TaskInstanceResult = self._call(
            "run_task",
            task,
            run_id=run_id,
            map_index=map_index,
            try_number=try_number,
            params=params,
        )
        return result

    def run_dag(
        self, dag: Dag, *, run_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> DagRunResult:
        """Blocking twin of :meth:`StateHarness.run_dag`."""
        result: DagRunResult = self._call("run_dag", dag, run_id=run_id, params=params)
        return result


def _refuse_async(what: str, instead: str) -> None:
    if trio.lowlevel.in_trio_run():
        msg = f"{what} blocks, so it cannot be used from async code (trio's thread); {instead}"
        raise AsyncContextError(msg)


# -- failures ---------------------------------------------------------------------------


def assert_success(result: ResultT) -> ResultT:
    """Return ``result`` if it succeeded, else raise its task's failure.

    ``r = assert_success(await sw.run_task(load))``. The error is raised as
    :class:`~stateward.TaskFailedError` whose ``__cause__`` is the exception the task
    raised, its traceback trimmed to start in the task's own code, so pytest shows the
    task's frames first.

    Args:
        result: A task instance's or a Dag run's result.

    Returns:
        ``result``, unchanged.

    Raises:
        TaskFailedError: the instance (or an instance of the run) did not succeed.
    """
    __tracebackhide__ = True
    if result.state == SUCCESS:
        return result
    failed: list[TaskInstanceResult]
    if isinstance(result, TaskInstanceResult):
        failed = [result]
        msg = f"{_describe(result)}; "
    else:
        failed = result.failed
        listed = "; ".join(_describe(ti) for ti in failed)
        msg = f"Dag run {result.run_id!r} of {result.dag_id!r} failed: {listed}; "
    first = next((ti for ti in failed if ti.error is not None), failed[0])
    if first.error is None:
        msg += "no task raised (check the upstream tasks)"
        raise TaskFailedError(msg, task=_label(first))
    msg += f"the traceback of {_label(first)!r} is shown above"
    raise TaskFailedError(msg, task=_label(first)) from _trimmed(first.error)


def _label(ti: TaskInstanceResult) -> str:
    label = f"{ti.dag_id}.{ti.task_id}"
    return label if ti.map_index < 0 else f"{label}[{ti.map_index}]"


def _describe(ti: TaskInstanceResult) -> str:
    if ti.error is None:
        return f"task {_label(ti)!r} is {ti.state}"
    tries = "1 try" if ti.try_number == 1 else f"{ti.try_number} tries"
    error = f"{type(ti.error).__name__}: {ti.error}"
    return f"task {_label(ti)!r} of run {ti.run_id!r} failed after {tries} ({error})"


def _trimmed(error: BaseException) -> BaseException:
    """``error`` with its traceback starting at the first frame of the task's code.

    The runner's, trio's and the thread pool's frames come first in a task's
    traceback and say nothing about the failure. An error with no frame outside them
    (say, a template that fails to render) keeps its whole traceback.
    """
    tb = error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.partition(".")[0] not in _MACHINERY:
            return error.with_traceback(tb)
        tb = tb.tb_next
    return error


def _failure_report(harnesses: list[StateHarness], shown: set[int]) -> str:
    parts: list[str] = []
    for harness in harnesses:
        for ti in harness.results:
            if ti.state == SUCCESS or ti.error is None or id(ti.error) in shown:
                continue
            lines = traceback.format_exception(_trimmed(ti.error))
            parts.append(f"{_describe(ti)}:\n{''.join(lines)}")
    return "\n".join(parts)


def _chain(error: BaseException | None) -> set[int]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return seen


def _collapse(error: BaseException) -> BaseException:
    """A chain of one-exception groups as its leaf, with the groups' frames first.

    As trio's non-strict mode would raise it, less the frames of trio's nurseries and
    pytest-trio's runner; any other exception is returned as it is.
    """
    outer: list[TracebackType] = []
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        tb = error.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            if module.partition(".")[0] not in ("trio", "pytest_trio", "outcome"):
                outer.append(tb)
            tb = tb.tb_next
        error = error.exceptions[0]
    joined = error.__traceback__
    for node in reversed(outer):
        joined = TracebackType(joined, node.tb_frame, node.tb_lasti, node.tb_lineno)
    return error.with_traceback(joined)


def _register(request: pytest.FixtureRequest, harness: StateHarness) -> None:
    request.node.stash.setdefault(_HARNESSES, []).append(harness)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the tracebacks of failed task instances to a failing test's report."""
    report = yield
    harnesses = item.stash.get(_HARNESSES, [])
    if report.when == "call" and report.failed and harnesses:
        raised = call.excinfo.value if call.excinfo is not None else None
        text = _failure_report(harnesses, _chain(raised))
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
        error = _collapse(group)
    # Raised outside the except block, so the group does not become its __context__.
    raise error


# -- fixtures ---------------------------------------------------------------------------


@_trio_fixture
async def sw_runtime() -> AsyncIterator[Runtime]:
    """An open runtime on a fresh MemoryStore."""
    async with open_runtime(store=MemoryStore()) as rt:
        yield rt


@_trio_fixture
async def sw_sqlite_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """An open runtime on a fresh SQLite file, ``tmp_path / "state.db"``."""
    async with open_runtime(tmp_path / "state.db") as rt:
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
